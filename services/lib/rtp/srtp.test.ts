import dgram from 'node:dgram';
import * as mediasoup from 'mediasoup';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config.ts';
import { parseRtcp } from './rtcp-packet.ts';
import { buildRtp } from './rtp-packet.ts';
import { SrtpReceiver, deriveSrtpKey } from './srtp.ts';

const hex = (s: string) => Buffer.from(s.replace(/\s/g, ''), 'hex');

describe('SRTP key derivation', () => {
  it('matches the test vectors of RFC 3711 Appendix B.3', () => {
    const key = hex('E1F97A0D3E018BE0D64FA32C06DE4139');
    const salt = hex('0EC675AD498AFEEBB6960B3AABE6');
    expect(deriveSrtpKey(key, salt, 0, 16).toString('hex')).toBe('c61e7a93744f39ee10734afe3ff7a087');
    expect(deriveSrtpKey(key, salt, 2, 14).toString('hex')).toBe('30cbbc08863d8c85d49db34a9ae1');
    expect(deriveSrtpKey(key, salt, 1, 20).toString('hex')).toBe('cebe321f6ff7716b6fd4ab49af256a156d38baa4');
  });
});

/**
 * Interop with libsrtp as mediasoup uses it: plain RTP into a producer, a consumer on an SRTP
 * PlainTransport (what the recording tap is) sends to this test's socket, SrtpReceiver opens it.
 */
describe('SrtpReceiver against mediasoup (libsrtp)', () => {
  it('opens what a SRTP PlainTransport sends (RTP payloads and sender reports) and refuses what it did not', async () => {
    const workerBin = loadConfig({ env: {} }).MEDIASOUP_WORKER_BIN;
    const worker = await mediasoup.createWorker({ logLevel: 'warn', ...(workerBin ? { workerBin } : {}) });
    const tx = dgram.createSocket('udp4');
    const rx = dgram.createSocket('udp4');
    try {
      const router = await worker.createRouter({ mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 }] });
      const listenInfo = { protocol: 'udp' as const, ip: '127.0.0.1' };
      const input = await router.createPlainTransport({ listenInfo, rtcpMux: true, comedia: true });
      const ssrc = 22222222;
      const producer = await input.produce({ kind: 'audio', rtpParameters: { codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }], encodings: [{ ssrc }] } });
      const tap = await router.createPlainTransport({ listenInfo, rtcpMux: true, comedia: false, enableSrtp: true, srtpCryptoSuite: 'AES_CM_128_HMAC_SHA1_80' });
      await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
      // The test only receives; mediasoup wants a remote key anyway.
      await tap.connect({ ip: '127.0.0.1', port: rx.address().port, srtpParameters: { cryptoSuite: 'AES_CM_128_HMAC_SHA1_80', keyBase64: Buffer.alloc(30, 7).toString('base64') } });
      const consumer = await tap.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities });
      const receiver = new SrtpReceiver('AES_CM_128_HMAC_SHA1_80', Buffer.from(tap.srtpParameters!.keyBase64, 'base64'));
      const wrongKey = new SrtpReceiver('AES_CM_128_HMAC_SHA1_80', Buffer.alloc(30, 1));

      const payloads = new Map<number, Buffer>();
      const received: Buffer[] = [];
      rx.on('message', (m) => received.push(m));
      // Sequence numbers that wrap past 65535, so the rollover counter is exercised.
      const sent = 80;
      for (let i = 0; i < sent; i++) {
        const payload = Buffer.from(`opus frame ${i} `.padEnd(60, '.'));
        payloads.set(i, payload);
        await new Promise<void>((r) => tx.send(buildRtp({ payloadType: 100, seq: 65500 + i, timestamp: 960 * i, ssrc }, payload), input.tuple.localPort, '127.0.0.1', () => r()));
        await new Promise((r) => setTimeout(r, 20));
      }
      await expect.poll(() => received.filter((b) => b[1]! < 192 || b[1]! > 223).length, { timeout: 5000 }).toBeGreaterThan(sent * 0.9);
      // mediasoup sends its first sender report about a second after media starts.
      await expect.poll(() => received.some((b) => b[1] === 200), { timeout: 8000 }).toBe(true);

      let rtp = 0;
      let reports = 0;
      const seen = new Set<string>();
      for (const b of received) {
        const isRtcp = b[1]! >= 192 && b[1]! <= 223;
        expect(isRtcp ? wrongKey.unprotectRtcp(b) : wrongKey.unprotectRtp(b)).toBeNull();
        if (isRtcp) {
          const clear = receiver.unprotectRtcp(b);
          expect(clear).not.toBeNull();
          const { packets, malformed } = parseRtcp(clear!);
          expect(malformed).toBe(false);
          const sr = packets.find((p) => p.packetType === 200);
          if (sr) {
            expect(sr.sr?.packetCount).toBeGreaterThan(0);
            expect(sr.ssrc).toBe(consumer.rtpParameters.encodings![0]!.ssrc);
            reports++;
          }
          continue;
        }
        const clear = receiver.unprotectRtp(b);
        expect(clear).not.toBeNull();
        // The payload is what was sent, in clear; on the wire it was not.
        const text = clear!.subarray(clear!.length - 60).toString();
        const i = Number(/^opus frame (\d+) /.exec(text)?.[1]);
        expect(clear!.subarray(clear!.length - 60).equals(payloads.get(i)!)).toBe(true);
        expect(b.includes(Buffer.from(`opus frame ${i} `))).toBe(false);
        seen.add(String(i));
        rtp++;
        // A flipped bit anywhere fails authentication.
        const forged = Buffer.from(b);
        forged[forged.length - 15] = forged[forged.length - 15]! ^ 1;
        expect(receiver.unprotectRtp(forged)).toBeNull();
      }
      expect(rtp).toBeGreaterThan(sent * 0.9);
      expect(seen.has(String(sent - 1))).toBe(true);
      expect(reports).toBeGreaterThan(0);
    } finally {
      tx.close();
      rx.close();
      worker.close();
    }
  });
});
