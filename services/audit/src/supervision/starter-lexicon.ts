import type { PolicyInput } from './policies.ts';

/**
 * A starter policy for financial-services conduct supervision, shipped as data: promises of
 * returns, requests to move the conversation off recorded channels, and talk of destroying
 * records. A firm copies it and tunes it (generic lexicons draw regulators' criticism); the
 * exclusions take out the usual disclaimers.
 */
export const STARTER_FINANCIAL_LEXICON: PolicyInput = {
  name: 'Financial services conduct (starter)',
  description: 'Guarantees and promises of returns, off-channel communication, record destruction; with card/IBAN/SSN detectors.',
  severity: 'high',
  lexicon: [
    // Guarantees and promises
    'guarantee',
    'guaranteed returns',
    'risk free',
    'risk-free',
    'cannot lose',
    "can't lose",
    'sure thing',
    'double your money',
    'no downside',
    'promise you returns',
    // Off-channel requests
    'text me',
    'whatsapp',
    'signal app',
    'telegram',
    'my personal phone',
    'personal email',
    'personal cell',
    'call NEAR/5 cell',
    'call me NEAR/5 mobile',
    'take this offline',
    'off the record',
    "don't put this in writing",
    'not on this line',
    // Record destruction
    'delete this',
    'delete the messages',
    'shred',
    'wipe NEAR/3 phone',
    'get rid of NEAR/4 records',
    // Inside information and front-running
    'inside information',
    'before it is announced',
    'front run',
    'keep this between us',
    // Exclusions: the disclaimers that mention the same words
    'NOT "no guarantee"',
    'NOT "not guaranteed"',
    'NOT "past performance"',
  ],
  detectors: ['card', 'iban', 'ssn'],
  patterns: [],
  scope: { rooms: [], participants: [], groups: [] },
  samplingPercent: 0,
  reviewers: [],
  enabled: true,
};
