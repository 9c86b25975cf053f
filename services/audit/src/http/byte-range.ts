import { VerbatimError } from '../../../lib/errors.ts';

/** One byte range (RFC 9110): `bytes=a-b`, `bytes=a-`, `bytes=-n`. Several ranges: null (the whole body, as RFC 9110 allows). */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null;
  const [, a, b] = m as unknown as [string, string, string];
  let start: number;
  let end: number;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) throw rangeNotSatisfiable(header, size);
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return null; // invalid: ignored
  }
  if (start >= size || end < start) throw rangeNotSatisfiable(header, size);
  return { start, end };
}

/** 416; the error handler answers it with a Content-Range header naming details.size. */
function rangeNotSatisfiable(header: string, size: number): VerbatimError {
  return new VerbatimError('RANGE_NOT_SATISFIABLE', `range ${header} is outside the artifact's ${size} bytes`, { hint: 'Ask for bytes within Content-Length.', details: { size } });
}
