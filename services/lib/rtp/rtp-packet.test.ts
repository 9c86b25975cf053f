import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RTP_HEADER_BYTES, buildRtp, hasVersion2, parseRtp, peekPayloadType, peekSsrc, rtpPayload } from './rtp-packet.ts';

interface RtpOpts {
  seq: number;
  ts: number;
  ssrc?: number;
  pt?: number;
  marker?: boolean;
  payload?: number;
  csrcs?: number[];
  /** one-byte header extension body, in 32-bit words */
  extWords?: number;
  padding?: number;
}

/** A real RTP packet: fixed header, CSRCs, RFC 8285 extension, RFC 3550 padding; payload bytes 0xab. */
function rtp(o: RtpOpts): Buffer {
  const csrcs = o.csrcs ?? [];
  const ext = o.extWords !== undefined ? 4 + 4 * o.extWords : 0;
  const pad = o.padding ?? 0;
  const payload = o.payload ?? 160;
  const b = Buffer.alloc(12 + 4 * csrcs.length + ext + payload + pad, 0xab);
  b[0] = 0x80 | (pad ? 0x20 : 0) | (ext ? 0x10 : 0) | csrcs.length;
  b[1] = (o.marker ? 0x80 : 0) | (o.pt ?? 100);
  b.writeUInt16BE(o.seq & 0xffff, 2);
  b.writeUInt32BE(o.ts >>> 0, 4);
  b.writeUInt32BE(o.ssrc ?? 1234, 8);
  let off = 12;
  for (const c of csrcs) off = b.writeUInt32BE(c, off);
  if (ext) {
    b.writeUInt16BE(0xbede, off);
    b.writeUInt16BE(o.extWords!, off + 2);
    off += ext;
    b.fill(0x11, off - 4 * o.extWords!, off);
  }
  if (pad) {
    b.fill(0, b.length - pad);
    b[b.length - 1] = pad;
  }
  return b;
}

describe('parseRtp', () => {
  it('accounts for CSRCs, extension and padding in the payload length', () => {
    const p = parseRtp(rtp({ seq: 65540, ts: 0, csrcs: [42], extWords: 1, padding: 3, payload: 20 }))!;
    expect(p).toMatchObject({ sequence: 4, csrcCount: 1, extensionProfile: 0xbede, extensionBytes: 8, paddingBytes: 3, payloadBytes: 20 });
    expect(parseRtp(Buffer.from([0x80, 100, 0, 1]))).toBeNull(); // too short
    const badExt = rtp({ seq: 1, ts: 1, extWords: 50, payload: 4 }).subarray(0, 30);
    expect(parseRtp(badExt)).toBeNull(); // extension runs past the end
  });

  it('reads the fixed header fields and refuses other versions and bad padding', () => {
    const b = rtp({ seq: 513, ts: 0xfedc_ba98, ssrc: 0xdead_beef, pt: 111, marker: true, payload: 5 });
    expect(parseRtp(b)).toEqual({ version: 2, marker: true, payloadType: 111, sequence: 513, timestamp: 0xfedc_ba98, ssrc: 0xdead_beef, csrcCount: 0, extensionBytes: 0, paddingBytes: 0, payloadBytes: 5 });
    const v1 = Buffer.from(b);
    v1[0] = 0x40;
    expect(parseRtp(v1)).toBeNull();
    const zeroPad = rtp({ seq: 1, ts: 1, padding: 2, payload: 4 });
    zeroPad[zeroPad.length - 1] = 0; // padding count 0 is invalid
    expect(parseRtp(zeroPad)).toBeNull();
    const overPad = rtp({ seq: 1, ts: 1, padding: 2, payload: 4 });
    overPad[overPad.length - 1] = 200; // more padding than the packet holds
    expect(parseRtp(overPad)).toBeNull();
  });

  it('rtpPayload is exactly the payload, without CSRCs, extension or padding', () => {
    const b = rtp({ seq: 9, ts: 9, csrcs: [1, 2], extWords: 2, padding: 4, payload: 7 });
    const payload = rtpPayload(b, parseRtp(b)!);
    expect(payload).toEqual(Buffer.alloc(7, 0xab));
    expect(payload.buffer).toBe(b.buffer); // a view, not a copy
  });
});

describe('hot-path peeks', () => {
  it('agree with parseRtp on any well-formed header', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 127 }), fc.boolean(), (seq, ts, ssrc, pt, marker) => {
        const b = rtp({ seq, ts, ssrc, pt, marker, payload: 1 });
        const p = parseRtp(b)!;
        expect(hasVersion2(b)).toBe(true);
        expect(peekPayloadType(b)).toBe(p.payloadType);
        expect(peekSsrc(b)).toBe(p.ssrc);
      }),
    );
  });

  it('hasVersion2 looks at the top two bits only', () => {
    const b = Buffer.alloc(RTP_HEADER_BYTES);
    for (const [first, ok] of [[0x80, true], [0xbf, true], [0x00, false], [0x40, false], [0xc0, false]] as const) {
      b[0] = first;
      expect(hasVersion2(b)).toBe(ok);
    }
  });
});

describe('buildRtp', () => {
  it('builds what parseRtp reads back: fields wrapped to their widths, payload after the fixed header', () => {
    const payload = Buffer.from([1, 2, 3]);
    const pkt = buildRtp({ payloadType: 101, seq: 0x1_0005, timestamp: 2 ** 32 + 7, ssrc: 0xdeadbeef, marker: true }, payload);
    const info = parseRtp(pkt)!;
    expect(info).toMatchObject({ version: 2, marker: true, payloadType: 101, sequence: 5, timestamp: 7, ssrc: 0xdeadbeef, csrcCount: 0, payloadBytes: 3 });
    expect(rtpPayload(pkt, info).equals(payload)).toBe(true);
  });
});
