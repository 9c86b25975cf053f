/**
 * Detectors of sensitive numbers and addresses in transcript text: card numbers (Luhn),
 * IBANs (ISO 13616 mod-97), US social security numbers, e-mail addresses and phone numbers,
 * written ("4111 1111 1111 1111") or spoken as Whisper writes speech ("four one one one ...",
 * "oh" for 0, "double five", "john dot smith at example dot com"). Each hit is a character
 * span of the segment's text, so a redaction can cover exactly the words said.
 *
 * Pure functions with no state; the regexes here are fixed and linear (no nested quantifiers).
 */

export const DETECTORS = ['card', 'iban', 'ssn', 'email', 'phone'] as const;
export type DetectorName = (typeof DETECTORS)[number];

/** What a redacted view shows in place of each detector's match. */
export const DETECTOR_LABELS: Readonly<Record<DetectorName, string>> = {
  card: 'CARD NUMBER',
  iban: 'IBAN',
  ssn: 'SSN',
  email: 'EMAIL',
  phone: 'PHONE NUMBER',
};

export interface DetectorHit {
  detector: DetectorName;
  label: string;
  /** [start, end) in the text's UTF-16 code units. */
  start: number;
  end: number;
  /** The text as said. */
  matched: string;
  /** The value read from it (digits, the IBAN without spaces, the address). */
  value: string;
}

const DIGIT_WORDS: Readonly<Record<string, string>> = {
  zero: '0', oh: '0', o: '0', nought: '0', naught: '0',
  one: '1', two: '2', three: '3', four: '4', five: '5', six: '6', seven: '7', eight: '8', nine: '9',
};
const REPEATS: Readonly<Record<string, number>> = { double: 2, triple: 3 };
const DIGIT_WORD = '(?:zero|oh|o|nought|naught|one|two|three|four|five|six|seven|eight|nine|double|triple)';
/** Four spoken digits in a row: the least any detector needs when there is no written digit. */
const SPOKEN_RUN = new RegExp(`\\b${DIGIT_WORD}\\b(?:[\\s,.\\-]+${DIGIT_WORD}\\b){3}`, 'i');
const SPOKEN_AT = /\sat\s[\s\S]*\sdot\s/i;

interface Token {
  word: string;
  start: number;
  end: number;
}

/** Words and digit groups with their offsets; punctuation between them is not a token. */
function tokens(text: string): Token[] {
  const out: Token[] = [];
  for (const m of text.matchAll(/[A-Za-z]+|\d+/g)) out.push({ word: m[0].toLowerCase(), start: m.index, end: m.index + m[0].length });
  return out;
}

/** Characters that may sit between the digits of one number ("4111-1111", "four, one"). */
const JOINER = /^[\s,.\-/()+]*$/;

interface DigitRun {
  digits: string;
  /** Per digit: the character span it came from (a spoken "double five" gives both fives one span). */
  spans: { start: number; end: number }[];
}

/**
 * Maximal runs of digits, written or spoken, joined only by spaces and light punctuation.
 * "oh" and "o" count as zero only inside a run (next to another digit), so "oh, I see" is not one.
 */
export function digitRuns(text: string): DigitRun[] {
  const toks = tokens(text);
  const runs: DigitRun[] = [];
  let cur: DigitRun | null = null;
  let lastEnd = -1;
  const close = () => {
    if (cur && cur.digits.length > 0) runs.push(cur);
    cur = null;
  };
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!;
    let digits: string | undefined;
    let end = t.end;
    let skip = 0;
    if (/^\d+$/.test(t.word)) digits = t.word;
    else if (REPEATS[t.word] && toks[i + 1] && DIGIT_WORDS[toks[i + 1]!.word] && JOINER.test(text.slice(t.end, toks[i + 1]!.start))) {
      digits = DIGIT_WORDS[toks[i + 1]!.word]!.repeat(REPEATS[t.word]!);
      end = toks[i + 1]!.end;
      skip = 1;
    } else if (DIGIT_WORDS[t.word] !== undefined) {
      const isOh = t.word === 'oh' || t.word === 'o';
      const nextIsDigit = !!toks[i + 1] && (DIGIT_WORDS[toks[i + 1]!.word] !== undefined || /^\d+$/.test(toks[i + 1]!.word) || REPEATS[toks[i + 1]!.word] !== undefined);
      if (!isOh || (cur && (cur).digits.length > 0) || nextIsDigit) digits = DIGIT_WORDS[t.word];
    }
    if (digits === undefined) {
      close();
      continue;
    }
    if (cur && !JOINER.test(text.slice(lastEnd, t.start))) close();
    cur ??= { digits: '', spans: [] };
    for (const d of digits) {
      (cur).digits += d;
      (cur).spans.push({ start: t.start, end });
    }
    lastEnd = end;
    i += skip;
  }
  close();
  return runs;
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** ISO 13616: letters to numbers, the first four characters moved to the end, mod 97 = 1. */
export function ibanValid(iban: string): boolean {
  const s = iban.replace(/\s+/g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(s)) return false;
  const moved = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (const ch of moved) {
    const v = ch >= 'A' ? String(ch.charCodeAt(0) - 55) : ch;
    for (const d of v) rem = (rem * 10 + (d.charCodeAt(0) - 48)) % 97;
  }
  return rem === 1;
}

/** SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000. */
export function ssnValid(digits: string): boolean {
  if (!/^\d{9}$/.test(digits)) return false;
  const area = digits.slice(0, 3);
  return area !== '000' && area !== '666' && area[0] !== '9' && digits.slice(3, 5) !== '00' && digits.slice(5) !== '0000';
}

const TLDS = new Set(['com', 'org', 'net', 'edu', 'gov', 'io', 'co', 'uk', 'de', 'fr', 'nl', 'ch', 'eu', 'us', 'ca', 'au', 'info', 'biz', 'me']);

function hitOf(detector: DetectorName, text: string, start: number, end: number, value: string): DetectorHit {
  return { detector, label: DETECTOR_LABELS[detector], start, end, matched: text.slice(start, end), value };
}

/** Card numbers: 13-19 digits, Luhn-valid, issuer digit 2-6; the longest valid stretch of a run. */
function cards(text: string, runs: DigitRun[]): { hits: DetectorHit[]; used: Set<DigitRun> } {
  const hits: DetectorHit[] = [];
  const used = new Set<DigitRun>();
  for (const run of runs) {
    if (run.digits.length < 13) continue;
    let found: { from: number; to: number } | undefined;
    for (let len = Math.min(19, run.digits.length); len >= 13 && !found; len--) {
      for (let from = 0; from + len <= run.digits.length; from++) {
        const d = run.digits.slice(from, from + len);
        if (/^[2-6]/.test(d) && luhnValid(d)) {
          found = { from, to: from + len };
          break;
        }
      }
    }
    if (!found) continue;
    used.add(run);
    hits.push(hitOf('card', text, run.spans[found.from]!.start, run.spans[found.to - 1]!.end, run.digits.slice(found.from, found.to)));
  }
  return { hits, used };
}

function ssns(text: string, runs: DigitRun[], used: Set<DigitRun>): DetectorHit[] {
  const hits: DetectorHit[] = [];
  for (const run of runs) {
    if (used.has(run) || run.digits.length !== 9 || !ssnValid(run.digits)) continue;
    const start = run.spans[0]!.start;
    const end = run.spans[8]!.end;
    const written = text.slice(start, end);
    // Written digits only in the 3-2-4 shape (a bare 9-digit number is more often something else); spoken: any nine.
    if (/^\d/.test(written) && !/^\d{3}[- ]\d{2}[- ]\d{4}$/.test(written)) continue;
    used.add(run);
    hits.push(hitOf('ssn', text, start, end, run.digits));
  }
  return hits;
}

/** Phone numbers: 10 digits (NANP), 11 starting with 1, or "+" and 8-15 digits. */
function phones(text: string, runs: DigitRun[], used: Set<DigitRun>): DetectorHit[] {
  const hits: DetectorHit[] = [];
  for (const run of runs) {
    if (used.has(run)) continue;
    const start = run.spans[0]!.start;
    const end = run.spans[run.spans.length - 1]!.end;
    const plus = text.slice(Math.max(0, start - 1), start) === '+' || /\bplus\s+$/i.test(text.slice(Math.max(0, start - 6), start));
    const n = run.digits.length;
    const ok = plus ? n >= 8 && n <= 15 : n === 10 ? /^[2-9]\d{2}[2-9]/.test(run.digits) : n === 11 && run.digits[0] === '1' && /^1[2-9]\d{2}[2-9]/.test(run.digits);
    if (!ok) continue;
    used.add(run);
    const from = plus && text[start - 1] === '+' ? start - 1 : start;
    hits.push(hitOf('phone', text, from, end, run.digits));
  }
  return hits;
}

function ibans(text: string): DetectorHit[] {
  const hits: DetectorHit[] = [];
  // Country, check digits, then groups of up to 4 (as printed) or one block.
  for (const m of text.matchAll(/\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b/gi)) {
    const value = m[0].replace(/\s+/g, '').toUpperCase();
    if (ibanValid(value)) hits.push(hitOf('iban', text, m.index, m.index + m[0].length, value));
  }
  return hits;
}

function emails(text: string): DetectorHit[] {
  const hits: DetectorHit[] = [];
  for (const m of text.matchAll(/\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,4}\.[A-Za-z]{2,24}\b/g)) {
    hits.push(hitOf('email', text, m.index, m.index + m[0].length, m[0].toLowerCase()));
  }
  // Spoken: "john dot smith at example dot com" (the last part a known top-level domain).
  for (const m of text.matchAll(/\b([a-z0-9]{1,40}(?:\s+dot\s+[a-z0-9]{1,40}){0,3})\s+at\s+([a-z0-9]{1,40}(?:\s+dot\s+[a-z0-9]{1,40}){1,3})\b/gi)) {
    const domain = m[2]!.toLowerCase().split(/\s+dot\s+/);
    if (!TLDS.has(domain[domain.length - 1]!)) continue;
    const value = `${m[1]!.toLowerCase().split(/\s+dot\s+/).join('.')}@${domain.join('.')}`;
    hits.push(hitOf('email', text, m.index, m.index + m[0].length, value));
  }
  return hits;
}

/**
 * Every hit of the named detectors in one text, in text order. A run of digits is one thing:
 * a card number if it can be one, else an SSN, else a phone number; digits inside an IBAN or
 * an e-mail address are that only.
 */
export function detect(text: string, which: readonly DetectorName[] = DETECTORS): DetectorHit[] {
  const want = new Set(which);
  // Most text holds no number at all: skip the tokenising then (every detector needs a digit or four spoken ones in a row).
  const digits = /\d/.test(text);
  const numbers = digits || SPOKEN_RUN.test(text);
  const runs = numbers && (want.has('card') || want.has('ssn') || want.has('phone')) ? digitRuns(text) : [];
  const out: DetectorHit[] = [];
  const c = want.has('card') ? cards(text, runs) : { hits: [], used: new Set<DigitRun>() };
  out.push(...c.hits);
  if (want.has('ssn')) out.push(...ssns(text, runs, c.used));
  if (want.has('phone')) out.push(...phones(text, runs, c.used));
  // An IBAN or an address holds digits of its own: they are not also a card or phone number.
  const first = [...(digits && want.has('iban') ? ibans(text) : []), ...(want.has('email') && (text.includes('@') || SPOKEN_AT.test(text)) ? emails(text) : [])];
  const kept = [...first, ...out.filter((x) => !first.some((f) => x.start < f.end && f.start < x.end))];
  return kept.sort((a, b) => a.start - b.start || a.end - b.end);
}
