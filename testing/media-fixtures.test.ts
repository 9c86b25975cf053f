import { describe, expect, it } from 'vitest';
import { avOffset, avPairs, syncError } from './media-fixtures.ts';

/** Flashes each second from `first`, beeps `offset(k)` after flash k (seconds, file time). */
function clip(first: number, count: number, offset: (k: number) => number): { flashes: number[]; beeps: number[] } {
  const flashes = Array.from({ length: count }, (_, i) => first + i);
  return { flashes, beeps: flashes.map((f, i) => f + offset(i)) };
}

describe('A/V sync measurement', () => {
  it('pairs each beep with its nearest flash and takes the median offset', () => {
    const c = clip(0.4, 5, (k) => [0.01, 0.02, -0.03, 0.04, 0.05][k]!);
    expect(avPairs(c.flashes, c.beeps).map((p) => Math.round(p.offset * 1000))).toEqual([10, 20, -30, 40, 50]);
    expect(avOffset(c.flashes, c.beeps)).toEqual({ offset: expect.closeTo(0.02, 6), pairs: 5 });
  });

  it('compares flash by flash: drift and frame-phase jumps cancel, whole-file medians would not', () => {
    // Captured clock: flash n at wall 100 + n s; the A/V offset drifts 2.7 ms/s and the
    // first bright frame jumps one 15 fps period later from flash 3 on.
    const truthOffset = (n: number) => -0.02 + 0.0027 * n - (n >= 3 ? 0.066 : 0);
    // Reference recording: flashes 1..6, file t = 0 at wall 100.5.
    const ref = clip(0.5, 6, (k) => truthOffset(k + 1));
    // Output: flashes -5..6 (started earlier), file t = 0 at wall 94.2, audio 8 ms late.
    const out = clip(0.8, 12, (k) => truthOffset(k - 5) + 0.008);
    const r = avPairs(ref.flashes, ref.beeps);
    const o = avPairs(out.flashes, out.beeps);
    const err = syncError(r, 100.5, o, 94.2);
    expect(err.diffs).toHaveLength(6);
    for (const d of err.diffs) expect(d).toBeCloseTo(0.008, 6);
    expect(err.median).toBeCloseTo(0.008, 6);
    // The naive comparison is off by far more than the real 8 ms.
    expect(Math.abs(avOffset(out.flashes, out.beeps).offset - avOffset(ref.flashes, ref.beeps).offset - 0.008)).toBeGreaterThan(0.03);
  });

  it('matches no flash when the two files cover different moments', () => {
    const c = clip(0.5, 4, () => 0.01);
    expect(syncError(avPairs(c.flashes, c.beeps), 0, avPairs(c.flashes, c.beeps), 10).diffs).toEqual([]);
  });
});
