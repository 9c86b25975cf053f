import { setFlagsFromString } from 'node:v8';
import { VerbatimError } from '../../../lib/errors.ts';

/**
 * A policy's own regular expressions. They run here, never in the database, and only on V8's
 * linear-time engine (the `l` flag): a pattern it cannot run in linear time (backreferences,
 * lookarounds, large counted repeats) is refused when the policy is saved, so no pattern can
 * backtrack for long on any transcript. The engine has no case-insensitive mode: patterns
 * match the lower-cased text.
 */

setFlagsFromString('--enable-experimental-regexp-engine');

export const MAX_PATTERN = 300;

function compiles(source: string, flags: string): boolean {
  try {
    new RegExp(source, flags);
    return true;
  } catch {
    return false;
  }
}

/** Whether a prefix of a pattern could still become a valid one (its open groups and class closed). */
function prefixCompiles(prefix: string, flags: string): boolean {
  if (prefix.endsWith('\\')) return true;
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < prefix.length; i++) {
    const c = prefix[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
  }
  const closed = `${prefix}${inClass ? ']' : ''}${')'.repeat(Math.max(0, depth))}`;
  // A trailing "(?" or "{" waits for more.
  return compiles(closed, flags) || /\(\?<?$|\{\d*,?\d*$/.test(prefix);
}

/** Where a refused pattern goes wrong: the first character after which no completion compiles. */
function errorPosition(source: string, flags: string): number {
  for (let i = 1; i <= source.length; i++) if (!prefixCompiles(source.slice(0, i), flags)) return i - 1;
  return source.length;
}

/** Compiles a policy pattern for linear-time matching; PATTERN_INVALID names the pattern and the character. */
export function compilePattern(source: string, name: string, index: number): RegExp {
  const fail = (position: number, why: string) =>
    new VerbatimError('PATTERN_INVALID', `pattern ${JSON.stringify(name)}, character ${position + 1}: ${why}`, {
      hint: 'Patterns are JavaScript regular expressions without backreferences or lookarounds, with counted repeats up to a few dozen; they match the lower-cased text.',
      details: { field: 'patterns', index, name, position, source },
    });
  if (source.length === 0) throw fail(0, 'empty pattern');
  if (source.length > MAX_PATTERN) throw fail(MAX_PATTERN, `longer than ${MAX_PATTERN} characters`);
  if (!compiles(source, 'g')) throw fail(errorPosition(source, 'g'), 'not a valid regular expression');
  if (!compiles(source, 'gl')) throw fail(errorPosition(source, 'gl'), 'cannot be matched in linear time (a backreference, lookaround or large counted repeat)');
  // The flag lives in a variable: linters do not know V8's experimental 'l'.
  const linear = 'gl';
  const re = new RegExp(source, linear);
  if (re.test('')) throw fail(0, 'matches the empty text');
  return re;
}

export interface PatternHit {
  start: number;
  end: number;
  matched: string;
}

export function matchPattern(re: RegExp, text: string): PatternHit[] {
  const lower = text.toLowerCase();
  // Lower-casing that changes the length (rare letters) would shift the offsets: match the text as is.
  const subject = lower.length === text.length ? lower : text;
  const out: PatternHit[] = [];
  re.lastIndex = 0;
  for (let m = re.exec(subject); m; m = re.exec(subject)) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    out.push({ start: m.index, end: m.index + m[0].length, matched: text.slice(m.index, m.index + m[0].length) });
  }
  return out;
}
