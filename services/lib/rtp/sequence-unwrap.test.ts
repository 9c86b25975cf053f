import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SEQUENCE_MODULUS, TIMESTAMP_MODULUS, unwrap, unwrapNear } from './sequence-unwrap.ts';

/** Unwraps a whole arrival-order list, each value against the previous extended one. */
const unwrapAll = (values: number[], mod: number) => {
  let prev: number | undefined;
  return values.map((v) => (prev = unwrap(v, prev, mod)));
};

describe('sequence and timestamp unwrapping', () => {
  it('runs on across the 16-bit sequence wrap', () => {
    const ext = unwrapAll([65533, 65534, 65535, 0, 1, 2], SEQUENCE_MODULUS);
    expect(ext.map((e) => e - ext[0]!)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(ext[0]).toBe(SEQUENCE_MODULUS + 65533); // starts one cycle up
  });

  it('puts packets reordered across the wrap back in place, in both directions', () => {
    const ext = unwrapAll([65534, 0, 65535, 1, 65533], SEQUENCE_MODULUS);
    expect(ext.map((e) => e - (SEQUENCE_MODULUS + 65534))).toEqual([0, 2, 1, 3, -1]);
    // The very first packet reordered behind a later one before the wrap stays positive.
    expect(unwrapAll([0, 65535], SEQUENCE_MODULUS)).toEqual([SEQUENCE_MODULUS, SEQUENCE_MODULUS - 1]);
  });

  it('unwraps 32-bit timestamps across their wrap, with reordering', () => {
    const ts = [TIMESTAMP_MODULUS - 1920, TIMESTAMP_MODULUS - 960, 960, 0, 1920];
    const ext = unwrapAll(ts, TIMESTAMP_MODULUS);
    expect(ext.map((e) => e - ext[0]!)).toEqual([0, 960, 2880, 1920, 3840]);
  });

  it('unwrapNear picks the cycle nearest to a reference (a sender report against a packet)', () => {
    const ref = 3 * TIMESTAMP_MODULUS + 100;
    expect(unwrapNear(50, ref, TIMESTAMP_MODULUS)).toBe(3 * TIMESTAMP_MODULUS + 50);
    expect(unwrapNear(TIMESTAMP_MODULUS - 10, ref, TIMESTAMP_MODULUS)).toBe(3 * TIMESTAMP_MODULUS - 10);
    expect(unwrapNear(5, 4 * TIMESTAMP_MODULUS - 5, TIMESTAMP_MODULUS)).toBe(4 * TIMESTAMP_MODULUS + 5);
  });

  it('recovers any stream whose steps stay under half the range (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: SEQUENCE_MODULUS - 1 }), fc.array(fc.integer({ min: -30_000, max: 30_000 }), { maxLength: 200 }), (start, steps) => {
        const truth = [start];
        for (const s of steps) truth.push(truth.at(-1)! + s);
        const ext = unwrapAll(truth.map((t) => ((t % SEQUENCE_MODULUS) + SEQUENCE_MODULUS) % SEQUENCE_MODULUS), SEQUENCE_MODULUS);
        expect(ext.map((e) => e - ext[0]!)).toEqual(truth.map((t) => t - start));
      }),
    );
  });
});
