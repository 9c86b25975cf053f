import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IPC_VERSION, type ToSupervisor } from '../../lib/contracts/recorder-ipc.ts';
import type { StartTrackRequest } from '../../lib/contracts/recorder-control.ts';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';
import * as mediasoup from 'mediasoup';
import { loadConfig } from '../../lib/config.ts';
import { buildRtp } from '../../lib/rtp/index.ts';
import { NativeTracks } from './native-tracks.ts';

/**
 * The native receive path against the real recorder-rx binary (built by its cached
 * offline build, as set-up does): real sockets, real files read back with the v1 reader.
 */
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-rx-'));
let bin = '';
beforeAll(() => {
  bin = execFileSync('bash', ['scripts/build-recorder-rx.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').at(-1)!;
}, 120_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SSRC = 0x1234_5678;
const PT = 111;
let portBase = 31_000 + (process.pid % 200) * 20;

function rtp(seq: number, ssrc = SSRC, pt = PT, size = 120): Buffer {
  const b = Buffer.alloc(size, seq & 0xff);
  b[0] = 0x80;
  b[1] = pt;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(seq * 960, 4);
  b.writeUInt32BE(ssrc, 8);
  return b;
}

function senderReport(ssrc = SSRC): Buffer {
  const b = Buffer.alloc(28);
  b[0] = 0x80;
  b[1] = 200;
  b.writeUInt16BE(6, 2);
  b.writeUInt32BE(ssrc, 4);
  return b;
}

function req(track: string, session = 's1'): StartTrackRequest {
  return {
    v: 1,
    room: 'r1',
    session,
    track,
    participant: { id: 'p1', name: 'Ada "quotes" \\ Lovelace ✓' },
    kind: 'audio',
    codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: PT, parameters: {} },
    ssrc: SSRC,
    headerExtensions: [],
    consent: { decision: 'granted', method: 'click' },
  };
}

async function harness(segmentSeconds = 60) {
  const dir = path.join(tmp, `s${portBase}`);
  mkdirSync(dir, { recursive: true });
  const msgs: ToSupervisor[] = [];
  const minPort = portBase;
  portBase += 20;
  const tracks = new NativeTracks({ bin, ip: '127.0.0.1', minPort, maxPort: minPort + 19, maxPacketBytes: 1500, fsyncIntervalMs: 100, segmentSeconds, drainMs: 5 }, (m) => msgs.push(m));
  await tracks.ready;
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const start = async (track: string, srtpKey?: string) => {
    await tracks.start({ t: 'start', v: IPC_VERSION, req: req(track), dir, segment: 0, ...(srtpKey ? { srtpKey } : {}) });
    const m = msgs.find((x) => (x.t === 'started' || x.t === 'startFailed') && x.track === track);
    if (m?.t !== 'started') throw new Error(`not started: ${JSON.stringify(m)}`);
    return m;
  };
  const send = async (port: number, packets: Buffer[], from = sock) => {
    for (const p of packets) await new Promise<void>((r) => from.send(p, port, '127.0.0.1', () => r()));
  };
  const sealed = (track: string) => msgs.filter((m): m is Extract<ToSupervisor, { t: 'sealed' }> => m.t === 'sealed' && m.track === track);
  const close = async () => {
    sock.close();
    await tracks.shutdown('test-end');
  };
  return { dir, msgs, tracks, sock, start, send, sealed, close };
}

describe('native receive path (recorder-rx)', () => {
  it('decrypts an SRTP tap from mediasoup (libsrtp), from the first packet on, and stores clear RTP', async () => {
    const workerBin = loadConfig({ env: {} }).MEDIASOUP_WORKER_BIN;
    const worker = await mediasoup.createWorker({ logLevel: 'warn', ...(workerBin ? { workerBin } : {}) });
    const h = await harness();
    try {
      const router = await worker.createRouter({ mediaCodecs: [{ kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2, preferredPayloadType: PT }] });
      const listenInfo = { protocol: 'udp' as const, ip: '127.0.0.1' };
      const input = await router.createPlainTransport({ listenInfo, rtcpMux: true, comedia: true });
      const producer = await input.produce({ kind: 'audio', rtpParameters: { codecs: [{ mimeType: 'audio/opus', payloadType: PT, clockRate: 48000, channels: 2 }], encodings: [{ ssrc: 999 }] } });
      const tap = await router.createPlainTransport({ listenInfo, rtcpMux: false, comedia: false, enableSrtp: true, srtpCryptoSuite: 'AES_CM_128_HMAC_SHA1_80' });
      const consumer = await tap.consume({ producerId: producer.id, rtpCapabilities: router.rtpCapabilities, paused: true });
      const ssrc = consumer.rtpParameters.encodings![0]!.ssrc!;
      const started = await h.tracks.start({ t: 'start', v: IPC_VERSION, req: { ...req('srtp1'), ssrc }, dir: h.dir, segment: 0, srtpKey: tap.srtpParameters!.keyBase64 }).then(() => h.msgs.find((m) => m.t === 'started' && m.track === 'srtp1'));
      if (started?.t !== 'started') throw new Error('not started');
      await tap.connect({ ip: '127.0.0.1', port: started.rtpPort, rtcpPort: started.rtcpPort, srtpParameters: { cryptoSuite: 'AES_CM_128_HMAC_SHA1_80', keyBase64: Buffer.alloc(30, 3).toString('base64') } });
      await consumer.resume();
      const payloads = Array.from({ length: 100 }, (_, i) => Buffer.from(`frame ${i} `.padEnd(80, '#')));
      for (let i = 0; i < payloads.length; i++) {
        await h.send(input.tuple.localPort, [buildRtp({ payloadType: PT, seq: i, timestamp: i * 960, ssrc: 999 }, payloads[i]!)]);
        await new Promise((r) => setTimeout(r, 5));
      }
      await new Promise((r) => setTimeout(r, 300));
      await h.tracks.stop({ t: 'stop', v: IPC_VERSION, session: 's1', track: 'srtp1', reason: 'stopped' });
      const stored = parseRecording(readFileSync(path.join(h.dir, 'srtp1-0.vrtp'))).records.filter((r) => r.type === RecordType.RTP);
      expect(stored.length).toBe(payloads.length);
      for (const [i, r] of stored.entries()) expect(r.data.subarray(r.data.length - 80).equals(payloads[i]!), `packet ${i}`).toBe(true);
    } finally {
      worker.close();
      await h.close();
    }
  });

  it('stores RTP and RTCP as verbatim-rtp v1 records, byte for byte, and seals .part on stop', async () => {
    const h = await harness();
    const started = await h.start('a1');
    const packets = Array.from({ length: 300 }, (_, i) => rtp(i, SSRC, PT, 60 + (i % 900)));
    await h.send(started.rtpPort, packets);
    await h.send(started.rtcpPort, [senderReport()]);
    await h.send(started.rtpPort, [senderReport()]); // RTCP multiplexed on the RTP port
    expect(readdirSync(h.dir)).toContain('a1-0.vrtp.part');
    await h.tracks.stop({ t: 'stop', v: IPC_VERSION, session: 's1', track: 'a1', reason: 'stopped' });
    const [seal] = h.sealed('a1');
    expect(seal).toMatchObject({ trackOpen: false, entry: { segment: 0, file: 'a1-0.vrtp', ssrc: SSRC, endReason: 'stopped', rtpPackets: 300, rtcpPackets: 2, truncated: false } });
    const bytes = readFileSync(path.join(h.dir, 'a1-0.vrtp'));
    expect(seal!.entry.bytes).toBe(bytes.length);
    expect(seal!.entry.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
    const parsed = parseRecording(bytes);
    expect(parsed.tornBytes).toBe(0);
    expect(parsed.header).toMatchObject({ format: 'verbatim-rtp', version: 1, room: 'r1', session: 's1', track: 'a1', segment: 0, ssrc: SSRC, participant: { name: 'Ada "quotes" \\ Lovelace ✓' } });
    expect(parsed.records.filter((r) => r.type === RecordType.RTP).map((r) => r.data)).toEqual(packets);
    expect(parsed.records.at(-1)!.data).toEqual(senderReport());
    // Arrival times are the kernel's receive times: in order per socket, and within this test's run.
    const at = parsed.records.filter((r) => r.type === RecordType.RTP).map((r) => r.arrivalUs);
    expect(at).toEqual([...at].sort((a, b) => a - b));
    expect(seal!.entry.firstArrivalUs).toBe(at[0]);
    expect(Math.abs(at[0]! / 1000 - Date.now())).toBeLessThan(60_000);
    await h.close();
  });

  it('refuses what the JS path refuses, counted by reason, and pins the first sender', async () => {
    const h = await harness();
    const started = await h.start('b1');
    const bad = Buffer.from(rtp(1));
    bad[0] = 0x40;
    await h.send(started.rtpPort, [rtp(0), Buffer.alloc(4), Buffer.alloc(1600, 0x80), bad, rtp(2, 0xdead, 96), rtp(3, SSRC, 96)]);
    await h.send(started.rtcpPort, [rtp(4), Buffer.alloc(6)]);
    const other = dgram.createSocket('udp4');
    await new Promise<void>((r) => other.bind(0, '127.0.0.1', () => r()));
    await h.send(started.rtpPort, [rtp(5)], other);
    other.close();
    await h.tracks.stats(); // a round trip: everything sent above has been read
    const s = await h.tracks.stats();
    expect(s).toMatchObject({ received: 9, stored: 1, dropped: { too_short: 2, over_mtu: 1, bad_version: 1, unknown_ssrc: 1, unknown_payload_type: 1, not_rtcp: 1, wrong_source: 1 } });
    expect(s!.perTrack['s1/b1']).toEqual(s!.dropped);
    await h.close();
  });

  it('a new SSRC from the same sender starts a new segment after 5 packets; segments rotate after RECORDER_SEGMENT_SECONDS', async () => {
    const h = await harness(1);
    const started = await h.start('c1');
    await h.send(started.rtpPort, [rtp(0), rtp(1)]);
    await h.send(started.rtpPort, Array.from({ length: 5 }, (_, i) => rtp(10 + i, 0xbeef)));
    await h.tracks.stats();
    expect(h.sealed('c1')).toHaveLength(1);
    expect(h.sealed('c1')[0]).toMatchObject({ trackOpen: true, entry: { segment: 0, endReason: 'ssrc-change', rtpPackets: 2 } });
    // Segment 1 (SSRC 0xbeef) has packets, so it rotates within about a second.
    await expect.poll(() => h.sealed('c1').length, { timeout: 5000, interval: 100 }).toBe(2);
    expect(h.sealed('c1')[1]).toMatchObject({ trackOpen: true, entry: { segment: 1, ssrc: 0xbeef, endReason: 'rotation', rtpPackets: 5 } });
    const seg2 = parseRecording(readFileSync(path.join(h.dir, 'c1-2.vrtp.part')));
    expect(seg2.header).toMatchObject({ segment: 2, ssrc: 0xbeef });
    await h.close();
    expect(h.sealed('c1').at(-1)).toMatchObject({ trackOpen: false, entry: { segment: 2, endReason: 'test-end', rtpPackets: 0 } });
  });

  it('a recorder-rx killed with -9 is restarted; its open segment is sealed as after a recorder kill -9', async () => {
    const h = await harness();
    const started = await h.start('d1');
    await h.send(started.rtpPort, Array.from({ length: 50 }, (_, i) => rtp(i)));
    await h.send(started.rtpPort, [Buffer.alloc(3)]);
    expect(await h.tracks.stats()).toMatchObject({ stored: 50, dropped: { too_short: 1 } });
    await new Promise((r) => setTimeout(r, 400)); // past a 200 ms hand-off to the kernel
    const pid = h.tracks.pid!;
    process.kill(pid, 'SIGKILL');
    await expect.poll(() => h.sealed('d1').length, { timeout: 5000, interval: 50 }).toBe(1);
    const [seal] = h.sealed('d1');
    expect(seal).toMatchObject({ trackOpen: false, entry: { segment: 0, file: 'd1-0.vrtp', endReason: 'recorder-crash', rtpPackets: 50, truncated: false } });
    expect(existsSync(path.join(h.dir, 'd1-0.vrtp.part'))).toBe(false);
    await h.tracks.ready;
    expect(h.tracks.pid).not.toBe(pid);
    expect(h.tracks.restartCount).toBe(1);
    // Counters carry over the restart: the supervisor's totals never go back.
    expect(await h.tracks.stats()).toMatchObject({ tracks: 0, stored: 50, dropped: { too_short: 1 } });
    // The new process takes tracks again.
    await h.tracks.start({ t: 'start', v: IPC_VERSION, req: req('d1'), dir: h.dir, segment: 1 });
    expect(h.msgs.filter((m) => m.t === 'started' && m.track === 'd1')).toHaveLength(2);
    await h.close();
  });
});
