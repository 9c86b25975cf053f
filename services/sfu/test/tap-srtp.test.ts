import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SessionManifestSchema, type SessionManifest } from '../../lib/contracts/recording.ts';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';
import { buildRtp } from '../../lib/rtp/index.ts';
import { tapKeyContext, wrapTapKey } from '../../lib/rtp/srtp.ts';
import { Bot } from '../../../testing/bots/bot.ts';
import { stopChild } from '../../../testing/processes.ts';
import { TEST_RECORDER_SECRET, startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * Issue 10 item 5: the recording tap (SFU → recorder) carries SRTP. A packet capture of the recorder's
 * ports holds no packet the recorder stored in clear, while the stored packets are the same RTP
 * (same headers, payloads decrypted), through both receive paths (recorder-rx with libsrtp, and the
 * Node path with lib/rtp/srtp.ts).
 */
const tcpdump = spawnSync('tcpdump', ['--version']).status === 0;
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

/** Captures UDP on loopback to the port range; resolves once tcpdump listens. */
async function capture(minPort: number, maxPort: number): Promise<{ stop(): Promise<Buffer[]> }> {
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'verbatim-pcap-')), 'tap.pcap');
  const child: ChildProcess = spawn('tcpdump', ['-i', 'lo', '-U', '-n', '-s', '0', '-w', file, 'udp', 'and', 'dst', 'portrange', `${minPort}-${maxPort}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
  });
  return {
    async stop() {
      // tcpdump stops at SIGINT without reading what its ring buffer still holds: let it catch up first.
      let size = -1;
      for (let i = 0; i < 20 && statSync(file).size !== size; i++) {
        size = statSync(file).size;
        await new Promise((r) => setTimeout(r, 300));
      }
      child.kill('SIGINT');
      await stopChild(child, 3000);

      return udpPayloads(readFileSync(file));
    },
  };
}

/** UDP payloads of a pcap file (Ethernet, Linux cooked v1/v2 or BSD loopback framing; IPv4). */
function udpPayloads(pcap: Buffer): Buffer[] {
  const le = pcap.readUInt32LE(0) === 0xa1b2c3d4;
  const u32 = (o: number) => (le ? pcap.readUInt32LE(o) : pcap.readUInt32BE(o));
  const link = u32(20);
  const linkBytes = { 0: 4, 1: 14, 113: 16, 276: 20 }[link];
  if (linkBytes === undefined) throw new Error(`pcap link type ${link} not handled`);
  const out: Buffer[] = [];
  for (let o = 24; o + 16 <= pcap.length; ) {
    const caplen = u32(o + 8);
    const frame = pcap.subarray(o + 16, o + 16 + caplen);
    o += 16 + caplen;
    const ip = frame.subarray(linkBytes);
    if (ip.length < 20 || ip[0]! >> 4 !== 4 || ip[9] !== 17) continue;
    const udp = ip.subarray((ip[0]! & 0x0f) * 4);
    out.push(Buffer.from(udp.subarray(8, udp.readUInt16BE(4))));
  }
  return out;
}

async function sealedManifest(rec: TestRecorder, room: string): Promise<{ dir: string; manifest: SessionManifest }> {
  const roomDir = path.join(rec.recordingsDir, room);
  let found: string | undefined;
  await expect
    .poll(() => {
      found = readdirSync(roomDir, { withFileTypes: true }).map((d) => path.join(roomDir, d.name)).find((d) => readdirSync(d).includes('manifest.json'));
      return !!found;
    }, { timeout: 20_000 })
    .toBe(true);
  return { dir: found!, manifest: SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(found!, 'manifest.json'), 'utf8'))) };
}

/** Fixed header, CSRCs and extension: what SRTP leaves in clear. */
function rtpHeaderBytes(b: Buffer): number {
  const n = 12 + 4 * (b[0]! & 0x0f);
  return b[0]! & 0x10 ? n + 4 + 4 * b.readUInt16BE(n + 2) : n;
}
const isRtcp = (b: Buffer) => b[1]! >= 192 && b[1]! <= 223;
const rtpKey = (b: Buffer) => `${b.readUInt32BE(8)}:${b.readUInt16BE(2)}`;

if (!tcpdump) it.skip('not run: tcpdump is not installed (npm run setup installs it)', () => {});
describe.skipIf(!tcpdump)('SRTP between the SFU and the recorder', () => {
  for (const [rx, minPort] of [
    ['native', 38_000],
    ['node', 38_200],
  ] as const) {
    it(`a capture of the tap shows no clear RTP; the ${rx} receive path stores the decrypted packets`, { timeout: 90_000 }, async () => {
      const maxPort = minPort + 99;
      const rec = await startTestRecorder({ RECORDER_RX: rx, RECORDER_MIN_PORT: String(minPort), RECORDER_MAX_PORT: String(maxPort) });
      cleanups.push(() => rec.stop());
      const sfu: TestSfu = await startTestSfu({ overrides: { RECORDER_URL: rec.url, RECORDER_SECRET: TEST_RECORDER_SECRET } });
      cleanups.push(() => sfu.close());
      const pcap = await capture(minPort, maxPort);
      const room = `srtp-${rx}`;
      await sfu.admin('POST', '/rooms', { id: room, flags: { record: true } });
      const { token } = (await sfu.admin('POST', `/rooms/${room}/tokens`, { identity: 'alice', name: 'Alice' })).body as { token: string };
      const bot = await Bot.join(sfu.url, token, 'alice', { publish: true, consume: false });
      // mediasoup sends a sender report about every second: wait for a few.
      await new Promise((r) => setTimeout(r, 3500));
      bot.close();
      const { dir, manifest } = await sealedManifest(rec, room);
      const wire = await pcap.stop();

      const stored = new Map<string, Buffer>();
      const storedRtcp: Buffer[] = [];
      for (const t of manifest.tracks) {
        for (const s of t.segments) {
          for (const r of parseRecording(readFileSync(path.join(dir, s.file))).records) {
            if (r.type === RecordType.RTP) stored.set(rtpKey(r.data), r.data);
            else storedRtcp.push(r.data);
          }
        }
      }
      expect(manifest.tracks.map((t) => t.kind).sort()).toEqual(['audio', 'video']);
      expect(stored.size).toBeGreaterThan(100);
      expect(storedRtcp.some((b) => b[1] === 200), 'sender reports stored in clear').toBe(true);
      const wireRtp = wire.filter((b) => b.length >= 12 && !isRtcp(b));

      // Every stored packet went over the wire SRTP-protected: same header, a 10-byte tag, a payload nobody can read.
      const storedSet = new Set([...stored.values(), ...storedRtcp].map((b) => b.toString('hex')));
      let matched = 0;
      for (const w of wireRtp) {
        expect(storedSet.has(w.toString('hex')), 'a clear packet on the wire').toBe(false);
        const clear = stored.get(rtpKey(w));
        if (!clear) continue;
        matched++;
        expect(w.length).toBe(clear.length + 10);
        const header = rtpHeaderBytes(clear);
        expect(w.subarray(0, header).equals(clear.subarray(0, header))).toBe(true);
        expect(w.subarray(header, clear.length).equals(clear.subarray(header))).toBe(false);
      }
      // A capture on a busy machine misses some packets (a burst now and then); what it holds must all be protected.
      expect(matched).toBeGreaterThan(Math.max(100, stored.size / 2));
      // Sender reports too: SRTCP adds the index and the tag, and hides the sender info.
      // (The range also sees the SFU's RTCP to the bot's ephemeral ports: only the tap's SSRCs count.)
      const tapSsrcs = new Set(storedRtcp.filter((b) => b[1] === 200).map((b) => b.readUInt32BE(4)));
      const wireSr = wire.filter((b) => b[1] === 200 && tapSsrcs.has(b.readUInt32BE(4)));
      expect(wireSr.length).toBeGreaterThan(0);
      for (const w of wireSr) expect(storedRtcp.some((c) => w.length === c.length + 14 && w.subarray(0, 8).equals(c.subarray(0, 8)) && !w.subarray(8, 28).equals(c.subarray(8, 28)))).toBe(true);
    });
  }

  it('refuses a key wrapped with another secret (SRTP_KEY_INVALID) and drops datagrams that do not authenticate (srtp_failed)', { timeout: 60_000 }, async () => {
    const rec = await startTestRecorder({ RECORDER_MIN_PORT: '38400', RECORDER_MAX_PORT: '38499' });
    cleanups.push(() => rec.stop());
    const track = (id: string, wrappedKey: string) => ({
      v: 1,
      room: 'srtp-bad',
      session: 's1',
      track: id,
      participant: { id: 'mallory', name: 'M' },
      kind: 'audio',
      codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100 },
      ssrc: 1234,
      consent: { decision: 'not-required' },
      srtp: { cryptoSuite: 'AES_CM_128_HMAC_SHA1_80', wrappedKey },
    });
    const key = randomBytes(30);
    const wrong = await rec.api('POST', '/v1/tracks', track('a', wrapTapKey('not-the-recorder-secret', tapKeyContext('s1', 'a'), key)));
    expect(wrong.status).toBe(400);
    expect(wrong.body.error.code).toBe('SRTP_KEY_INVALID');
    // A key wrapped for another track does not open this one either.
    const replayed = await rec.api('POST', '/v1/tracks', track('a', wrapTapKey(TEST_RECORDER_SECRET, tapKeyContext('s1', 'b'), key)));
    expect(replayed.body.error?.code).toBe('SRTP_KEY_INVALID');

    const ok = await rec.api('POST', '/v1/tracks', track('a', wrapTapKey(TEST_RECORDER_SECRET, tapKeyContext('s1', 'a'), key)));
    expect(ok.status).toBe(201);
    const sock = dgram.createSocket('udp4');
    try {
      for (let i = 0; i < 20; i++) {
        const forged = buildRtp({ payloadType: 100, seq: i, timestamp: i * 960, ssrc: 1234 }, randomBytes(50));
        await new Promise<void>((r) => sock.send(forged, ok.body.rtpPort, '127.0.0.1', () => r()));
      }
      await expect.poll(async () => (await rec.api('GET', '/v1/dropped')).body.dropped.srtp_failed ?? 0, { timeout: 15_000 }).toBe(20);
    } finally {
      sock.close();
    }
    expect((await rec.api('DELETE', '/v1/sessions/s1/tracks/a')).status).toBe(204);
  });
});
