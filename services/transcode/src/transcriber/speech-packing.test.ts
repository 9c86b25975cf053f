import { describe, expect, it } from 'vitest';
import { packedPcm, packSpeechSpans, unpackSegment, unpackTime } from './speech-packing.ts';

const SR = 16000;
/** Seconds → samples, as the packer rounds them. */
const n = (seconds: number) => Math.round(seconds * SR);

describe('packSpeechSpans', () => {
  it('lays spans end to end with a gap, starting a new window instead of straddling one', () => {
    const spans = [
      { start: 2, end: 5 }, // 3 s
      { start: 40, end: 50 }, // 10 s
      { start: 100, end: 117 }, // 17 s: 13.3 + 0.3 + 17 > 30 → next window
      { start: 200, end: 202 }, // 2 s: fits after it
    ];
    const p = packSpeechSpans(spans, n(300));
    expect(p.pieces).toEqual([
      { srcFrom: n(2), srcTo: n(5), dstFrom: 0 },
      { srcFrom: n(40), srcTo: n(50), dstFrom: n(3.3) },
      { srcFrom: n(100), srcTo: n(117), dstFrom: n(30) },
      { srcFrom: n(200), srcTo: n(202), dstFrom: n(47.3) },
    ]);
    expect(p.totalSamples).toBe(n(49.3));
    expect(p.windows).toBe(2);
  });

  it('a span longer than a window is not moved (it straddles whatever happens)', () => {
    const p = packSpeechSpans([{ start: 0, end: 10 }, { start: 20, end: 65 }], n(70), { gapSec: 0.5 });
    expect(p.pieces.map((x) => x.dstFrom / SR)).toEqual([0, 10.5]);
    expect(p.windows).toBe(2);
  });

  it('clamps spans to the track and drops empty ones', () => {
    const p = packSpeechSpans([{ start: 9.5, end: 12 }, { start: 12, end: 12 }], n(10));
    expect(p.pieces).toEqual([{ srcFrom: n(9.5), srcTo: n(10), dstFrom: 0 }]);
    expect(packSpeechSpans([], n(10))).toMatchObject({ pieces: [], totalSamples: 0, windows: 0 });
  });

  it('packedPcm copies each piece to its place, silence between', () => {
    const src = Buffer.alloc(10 * 2);
    for (let i = 0; i < 10; i++) src.writeInt16LE(100 + i, i * 2);
    const p = packSpeechSpans([{ start: 1, end: 3 }, { start: 6, end: 8 }], 10, { sampleRate: 1, gapSec: 2 });
    const out = packedPcm(src, p);
    expect(Array.from({ length: out.length / 2 }, (_, i) => out.readInt16LE(i * 2))).toEqual([101, 102, 0, 0, 106, 107]);
  });
});

describe('unpackTime / unpackSegment', () => {
  const p = packSpeechSpans([{ start: 2, end: 5 }, { start: 40, end: 50 }, { start: 100, end: 120 }], n(300));
  // pieces: [0,3) ← 2..5, [3.3,13.3) ← 40..50, [30,50) ← 100..120

  it('maps times inside pieces exactly', () => {
    expect(unpackTime(p, 0, 'start')).toBe(2);
    expect(unpackTime(p, 1.25, 'start')).toBe(3.25);
    expect(unpackTime(p, 3.3, 'start')).toBe(40);
    expect(unpackTime(p, 10.01, 'end')).toBeCloseTo(46.71, 9);
    expect(unpackTime(p, 30, 'start')).toBe(100);
    expect(unpackTime(p, 45, 'end')).toBe(115);
    expect(unpackTime(p, 50, 'end')).toBe(120);
  });

  it('snaps times in the silence to the neighbouring speech', () => {
    expect(unpackTime(p, 3.1, 'start')).toBe(40); // gap → next piece's start
    expect(unpackTime(p, 3.1, 'end')).toBe(5); // gap → previous piece's end
    expect(unpackTime(p, 3, 'start')).toBe(40); // exactly at a piece's end: the next one starts it
    expect(unpackTime(p, 3, 'end')).toBe(5);
    expect(unpackTime(p, 3.3, 'end')).toBe(5); // an end where a piece begins ends the one before
    expect(unpackTime(p, 20, 'end')).toBe(50); // window padding
    expect(unpackTime(p, 60, 'end')).toBe(120); // past the clip (Whisper's <|30.00|>)
  });

  it('a segment across pieces spans them on the timeline; one inside a gap sticks to the speech before', () => {
    expect(unpackSegment(p, 0, 13.3)).toEqual({ start: 2, end: 50 });
    expect(unpackSegment(p, 1, 30)).toEqual({ start: 3, end: 50 });
    expect(unpackSegment(p, 14, 20)).toEqual({ start: 50, end: 50 });
  });
});
