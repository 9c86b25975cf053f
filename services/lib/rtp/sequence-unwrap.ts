/**
 * Extending wrapping RTP counters (16-bit sequence numbers, 32-bit timestamps) into
 * wrap-free numbers: each value is placed in the cycle that brings it nearest to a
 * reference, so wraps forward and reordering back across a wrap both come out right.
 */

export const SEQUENCE_MODULUS = 0x1_0000;
export const TIMESTAMP_MODULUS = 0x1_0000_0000;

/** The extension of `v` (mod `mod`) nearest to the extended value `ref`. */
export function unwrapNear(v: number, ref: number, mod: number): number {
  const base = ref - (ref % mod);
  let c = base + v;
  if (c - ref > mod / 2) c -= mod;
  else if (ref - c > mod / 2) c += mod;
  return c;
}

/**
 * Unwraps against the previous extended value; the first value starts one cycle up,
 * so a packet reordered before it across a wrap cannot go negative.
 */
export function unwrap(v: number, prev: number | undefined, mod: number): number {
  if (prev === undefined) return v + mod;
  return unwrapNear(v, prev, mod);
}
