import dgram from 'node:dgram';
import * as mediasoup from 'mediasoup';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.ts';
import { mediaCodecs } from '../src/room.ts';

/**
 * SRTP on PlainTransports runs through the libsrtp3-API adapter over Debian's libsrtp2
 * (see scripts/mediasoup-worker). Plain RTP in → consumer on an SRTP transport B →
 * SRTP to transport C → producer on C: C counts only packets that B protected and C
 * unprotected successfully.
 */
describe('SRTP PlainTransport (AES_CM_128_HMAC_SHA1_80) through the offline-built worker', () => {
  it('protects and unprotects RTP end to end', async () => {
    const workerBin = loadConfig({ env: {} }).MEDIASOUP_WORKER_BIN;
    const worker = await mediasoup.createWorker({ logLevel: 'warn', ...(workerBin ? { workerBin } : {}) });
    const socket = dgram.createSocket('udp4');
    try {
      const router = await worker.createRouter({ mediaCodecs });
      const listenInfo = { protocol: 'udp' as const, ip: '127.0.0.1' };
      const a = await router.createPlainTransport({ listenInfo, rtcpMux: true, comedia: true });
      const ssrc = 11111111;
      const producerA = await a.produce({ kind: 'audio', rtpParameters: { codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }], encodings: [{ ssrc }] } });
      const srtp = { listenInfo, rtcpMux: true, comedia: false, enableSrtp: true, srtpCryptoSuite: 'AES_CM_128_HMAC_SHA1_80' as const };
      const b = await router.createPlainTransport(srtp);
      const c = await router.createPlainTransport(srtp);
      await b.connect({ ip: '127.0.0.1', port: c.tuple.localPort, srtpParameters: c.srtpParameters! });
      await c.connect({ ip: '127.0.0.1', port: b.tuple.localPort, srtpParameters: b.srtpParameters! });
      const consumerB = await b.consume({ producerId: producerA.id, rtpCapabilities: router.rtpCapabilities });
      const { mid: _mid, ...rtpParameters } = consumerB.rtpParameters;
      const producerC = await c.produce({ kind: 'audio', rtpParameters });

      await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
      const sent = 60;
      for (let i = 0; i < sent; i++) {
        const pkt = Buffer.alloc(92, 0xab);
        pkt[0] = 0x80;
        pkt[1] = 100;
        pkt.writeUInt16BE(1000 + i, 2);
        pkt.writeUInt32BE(960 * i, 4);
        pkt.writeUInt32BE(ssrc, 8);
        socket.send(pkt, a.tuple.localPort, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 10));
      }
      const count = async (p: mediasoup.types.Producer) => (await p.getStats()).reduce((n, s) => n + s.packetCount, 0);
      await expect.poll(() => count(producerC), { timeout: 5000 }).toBeGreaterThan(sent * 0.9);
      expect(await count(producerA)).toBe(sent);
      expect((await c.getStats())[0]!.rtpBytesReceived).toBeGreaterThan(0);
    } finally {
      socket.close();
      worker.close();
    }
  });
});
