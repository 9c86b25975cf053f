import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeFileHeader, encodeRecord, RecordType } from '../../../lib/recording/vrtp-format.ts';
import { buildRtp } from '../../../lib/rtp/rtp-packet.ts';
import { sampleHeader } from '../../../../testing/recording-fixtures.ts';
import { mergeReplicas } from './replica-merge.ts';
import { readTrackPackets } from './rtp-stream.ts';

/**
 * Two recorder segments of one producer as two SFU consumers deliver it: the same payloads, each
 * copy with its own SSRC, sequence base and timestamp base, each missing different packets.
 */
function copies(n: number, dropA: Set<number>, dropB: Set<number>) {
  const payloads = Array.from({ length: n }, () => randomBytes(120));
  const startUs = 1_700_000_000_000_000;
  const seg = (ssrc: number, seqBase: number, tsBase: number, drop: Set<number>) => {
    const header = sampleHeader({ ssrc, codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} }, startedAtUs: startUs });
    const parts = [encodeFileHeader(header)];
    for (let i = 0; i < n; i++) {
      if (drop.has(i)) continue;
      const rtp = buildRtp({ payloadType: 100, seq: (seqBase + i) & 0xffff, timestamp: (tsBase + i * 960) >>> 0, ssrc }, payloads[i]!);
      parts.push(encodeRecord(RecordType.RTP, startUs + i * 20_000 + (ssrc % 7) * 100, rtp));
    }
    return { t: readTrackPackets(Buffer.concat(parts), `copy-${ssrc}.vrtp`) };
  };
  // Copy B's sequence numbers wrap past 65535 while A's do not: the offset must still line up.
  return { a: seg(1111, 1000, 50_000, dropA), b: seg(2222, 65_500, 3_000_000, dropB), payloads };
}

describe('mergeReplicas', () => {
  it('drops different packets from each copy: the merged stream holds every packet once, in order', () => {
    const n = 400;
    const dropA = new Set([5, 6, 7, 100, 250, 251, 399]);
    const dropB = new Set([0, 1, 50, 120, 121, 300]);
    const { a, b, payloads } = copies(n, dropA, dropB);
    expect(a.t.packets).toHaveLength(n - dropA.size);
    const r = mergeReplicas([b, a]);
    expect(r.pieces).toHaveLength(1);
    expect(r.merged).toBe(1);
    const out = r.pieces[0]!.t.packets;
    expect(out).toHaveLength(n);
    // Every packet's payload in sending order, on one numbering.
    expect(out.map((p) => p.payload.toString('hex'))).toEqual(payloads.map((p) => p.toString('hex')));
    for (let i = 1; i < out.length; i++) {
      expect(out[i]!.seq - out[i - 1]!.seq).toBe(1);
      expect(out[i]!.ts - out[i - 1]!.ts).toBe(960);
    }
  });

  it('keeps overlapping pieces apart that share no packets (not copies of one stream)', () => {
    const { a } = copies(100, new Set(), new Set());
    const { b } = copies(100, new Set(), new Set());
    const r = mergeReplicas([a, b]);
    expect(r.pieces).toHaveLength(2);
    expect(r.added).toBe(0);
  });
});
