import { z } from 'zod';

/**
 * Text the database can store as it was given. Postgres refuses NUL in text and jsonb (a 500
 * after the fact, or a session that can never be sealed), and the driver silently replaces a
 * lone surrogate (the stored evidence would differ from what was sent), so every boundary
 * refuses both; evidence of a refused request is made storable instead (toStorable).
 */

// eslint-disable-next-line no-control-regex -- NUL is exactly what it finds
const UNSTORABLE = /[\u0000]|\p{Cs}/u;
// eslint-disable-next-line no-control-regex -- NUL is exactly what it replaces
const UNSTORABLE_ALL = /[\u0000\p{Cs}]/gu;

export const UNSTORABLE_MESSAGE = 'must not hold NUL characters or lone surrogates';

export function isStorableText(s: string): boolean {
  return !UNSTORABLE.test(s);
}

/** Free text of 1..max characters that the database stores as given. */
export const storableText = (max: number) => z.string().min(1).max(max).refine(isStorableText, UNSTORABLE_MESSAGE);

/**
 * Any JSON value (a record's free-form details) that the database stores as given: every string
 * and key storable, at most `maxDepth` levels and `maxBytes` of string content. Checked without
 * recursion, so a hostile nesting depth is refused instead of overflowing the stack.
 */
export function storableJson(opts: { maxDepth: number; maxBytes: number }) {
  return z.unknown().superRefine((value, ctx) => {
    const problem = jsonProblem(value, opts);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
}

function jsonProblem(root: unknown, opts: { maxDepth: number; maxBytes: number }): string | null {
  let bytes = 0;
  const stack: { v: unknown; depth: number }[] = [{ v: root, depth: 0 }];
  while (stack.length > 0) {
    const { v, depth } = stack.pop()!;
    if (typeof v === 'string') {
      if (!isStorableText(v)) return `strings ${UNSTORABLE_MESSAGE}`;
      bytes += v.length;
    } else if (v !== null && typeof v === 'object') {
      if (depth >= opts.maxDepth) return `nested deeper than ${opts.maxDepth} levels`;
      const entries = Array.isArray(v) ? v.map((x) => ['', x] as const) : Object.entries(v);
      for (const [k, x] of entries) {
        if (!isStorableText(k)) return `keys ${UNSTORABLE_MESSAGE}`;
        bytes += k.length;
        stack.push({ v: x, depth: depth + 1 });
      }
    } else if (typeof v === 'number' && !Number.isFinite(v)) return 'numbers must be finite';
    else if (typeof v !== 'number' && typeof v !== 'boolean' && v !== null) return `a ${typeof v} is not JSON`;
    if (bytes > opts.maxBytes) return `more than ${opts.maxBytes} characters of text`;
  }
  return null;
}

/** Hostile text as evidence can keep it: NUL and lone surrogates become U+FFFD, long text is cut. */
export function toStorable(s: string, max: number): string {
  // Cut first, then clean: a cut can split a surrogate pair.
  const cut = s.length > max ? `${s.slice(0, max)}…` : s;
  return cut.replace(UNSTORABLE_ALL, '\uFFFD');
}

/** A JSON value as evidence can keep it: strings and keys made storable, depth and breadth bounded. */
export function toStorableJson(v: unknown, depth = 0): unknown {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return toStorable(v, 500);
  if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
  if (typeof v === 'boolean' || v === null) return v;
  if (typeof v !== 'object' || depth >= 6) return typeof v === 'object' ? '[nested]' : String(typeof v);
  if (Array.isArray(v)) return v.slice(0, 20).map((x) => toStorableJson(x, depth + 1));
  return Object.fromEntries(
    Object.entries(v)
      .slice(0, 50)
      .map(([k, x]) => [toStorable(k, 100), toStorableJson(x, depth + 1)]),
  );
}
