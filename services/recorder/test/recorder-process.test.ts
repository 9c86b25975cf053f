import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionManifestSchema } from '../../lib/contracts/recording.ts';
import { startTestRecorder, type TestRecorder } from '../../../testing/recorder-harness.ts';
import { RecordType, parseRecording } from '../../lib/recording/vrtp-format.ts';

const SSRC = 0x1234abcd;
const PT = 100;
const trackReq = (track: string, session = 'sess1', room = 'room1') => ({
  v: 1,
  room,
  session,
  track,
  participant: { id: 'alice', name: 'Alice' },
  kind: 'audio',
  codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: PT, parameters: {} },
  ssrc: SSRC,
  headerExtensions: [],
  consent: { decision: 'granted', method: 'click' },
});

function rtp(seq: number, ssrc = SSRC, pt = PT, size = 120): Buffer {
  const b = Buffer.alloc(size, 7);
  b[0] = 0x80;
  b[1] = pt;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE((seq * 960) >>> 0, 4);
  b.writeUInt32BE(ssrc >>> 0, 8);
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
async function socket(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  return s;
}
const sendAll = async (s: dgram.Socket, pkts: Buffer[], port: number) => {
  // Paced in small bursts so loopback socket buffers never overflow: every datagram must arrive.
  for (let i = 0; i < pkts.length; i += 100) {
    await Promise.all(pkts.slice(i, i + 100).map((p) => new Promise<void>((r) => s.send(p, port, '127.0.0.1', () => r()))));
    await new Promise((r) => setTimeout(r, 1));
  }
};

let rec: TestRecorder;
beforeAll(async () => {
  rec = await startTestRecorder();
});
afterAll(async () => {
  await rec?.stop();
});

describe('recorder process', () => {
  it('stores valid RTP/RTCP, counts 100k malformed datagrams by reason, seals a session into db + queue', async () => {
    const started = await rec.api('POST', '/v1/tracks', trackReq('alice-audio'));
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const { rtpPort, rtcpPort } = started.body;
    const sender = await socket();
    const legit = Array.from({ length: 300 }, (_, i) => rtp(65_400 + i)); // crosses the 16-bit wrap
    legit.push(legit[10]!); // a duplicate is stored as it arrived
    await sendAll(sender, legit, rtpPort);
    await sendAll(sender, [senderReport(), senderReport()], rtcpPort);

    // 100k junk datagrams from another socket, in known categories.
    const fuzz = await socket();
    const rand = (n: number) => Math.floor(Math.random() * n);
    const expected = { too_short: 0, over_mtu: 0, bad_version: 0, unknown_ssrc: 0, unknown_payload_type: 0, not_rtcp: 0, wrong_source: 0 };
    const toRtp: Buffer[] = [];
    const toRtcp: Buffer[] = [];
    const otherPt = () => {
      const choices = [...Array(64).keys(), ...Array.from({ length: 32 }, (_, i) => 96 + i)].filter((p) => p !== PT);
      return choices[rand(choices.length)]!;
    };
    for (let i = 0; i < 100_000; i++) {
      switch (i % 7) {
        case 0: toRtp.push(Buffer.alloc(1 + rand(7), rand(256))); expected.too_short++; break;
        case 1: toRtp.push(rtp(i, SSRC, PT, 1501 + rand(500))); expected.over_mtu++; break;
        case 2: { const b = rtp(i); b[0] = [0x00, 0x40, 0xc0][rand(3)]!; toRtp.push(b); expected.bad_version++; break; }
        case 3: { let ssrc = rand(0xffffffff); if (ssrc === SSRC) ssrc++; toRtp.push(rtp(i, ssrc, otherPt())); expected.unknown_ssrc++; break; }
        case 4: toRtp.push(rtp(i, SSRC, otherPt())); expected.unknown_payload_type++; break;
        case 5: { const b = Buffer.alloc(8 + rand(100), 1); b[0] = 0x80; b[1] = rand(192); toRtcp.push(b); expected.not_rtcp++; break; }
        case 6: toRtp.push(rtp(i)); expected.wrong_source++; break; // valid-looking, but not from the pinned sender
      }
    }
    await sendAll(fuzz, toRtp, rtpPort);
    await sendAll(fuzz, toRtcp, rtcpPort);
    await expect.poll(async () => (await rec.api('GET', '/v1/dropped')).body.dropped, { timeout: 20_000 }).toEqual(expected);

    const events = await rec.api('POST', '/v1/sessions/sess1/events', { v: 1, room: 'room1', events: [{ at: new Date().toISOString(), type: 'participant-joined', participant: 'alice', details: { name: 'Alice' } }] });
    expect(events.status).toBe(204);
    const end = await rec.api('POST', '/v1/sessions/sess1/end', { v: 1, room: 'room1', reason: 'test' });
    expect(end.status, JSON.stringify(end.body)).toBe(200);
    const dir = path.join(rec.recordingsDir, 'room1', 'sess1');
    expect(readdirSync(dir).filter((f) => f.endsWith('.part'))).toEqual([]);
    const manifest = SessionManifestSchema.parse(JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')));
    expect(manifest.dropped).toEqual(expected);
    const seg = manifest.tracks[0]!.segments[0]!;
    expect(seg).toMatchObject({ file: 'alice-audio-0.vrtp', rtpPackets: 301, rtcpPackets: 2, truncated: false, endReason: 'session-ended' });
    const parsed = parseRecording(readFileSync(path.join(dir, seg.file)));
    expect(parsed.records.filter((r) => r.type === RecordType.RTP).map((r) => r.data.readUInt16BE(2)).slice(134, 138)).toEqual([65_534, 65_535, 0, 1]);
    expect(manifest.participants).toEqual([{ id: 'alice', name: 'Alice', consent: expect.objectContaining({ decision: 'granted', method: 'click' }) }]);

    const db = await rec.openDb();
    try {
      const row = await db.selectFrom('recording_sessions').selectAll().where('id', '=', 'sess1').executeTakeFirstOrThrow();
      expect(row).toMatchObject({ room_id: 'room1', status: 'sealed', manifest_path: path.join(dir, 'manifest.json') });
      const segs = await db.selectFrom('track_segments').selectAll().where('session_id', '=', 'sess1').execute();
      expect(segs).toHaveLength(1);
      expect(segs[0]).toMatchObject({ rtp_packets: 301, sha256: seg.sha256 });
      // The timeline is sealed into the database with the manifest, in manifest order.
      const timeline = await db.selectFrom('session_events').selectAll().where('session_id', '=', 'sess1').orderBy('ordinal').execute();
      expect(timeline.map((e) => e.type)).toEqual(['session-started', 'participant-joined', 'session-ended']);
      expect(timeline.map((e) => ({ at: new Date(e.at).toISOString(), type: e.type, participant: e.participant_id, details: e.details }))).toEqual(
        manifest.events.map((e) => ({ at: e.at, type: e.type, participant: e.participant ?? null, details: e.details })),
      );
      expect(timeline[1]).toMatchObject({ ordinal: 1, participant_id: 'alice', track_id: null, details: { name: 'Alice' } });
    } finally {
      await db.destroy();
    }
    const queue = rec.finalizeQueue();
    const job = await queue.getJob('finalize.sess1');
    expect(job?.name).toBe('session.finalize');
    expect(job?.data).toMatchObject({ v: 1, room: 'room1', session: 'sess1' });
    await queue.close();
    sender.close();
    fuzz.close();
  });

  it('refuses new tracks with DISK_FULL below the free-space threshold', async () => {
    const tight = await startTestRecorder({ RECORDER_MIN_FREE_MB: '10000000' });
    try {
      const res = await tight.api('POST', '/v1/tracks', trackReq('t1'));
      expect(res.status).toBe(507);
      expect(res.body.error.code).toBe('DISK_FULL');
      const metrics = await fetch(`${tight.url}/metrics`).then((r) => r.text());
      expect(metrics).toMatch(/verbatim_recorder_refused_tracks_total\{[^}]*code="DISK_FULL"[^}]*\} 1/);
    } finally {
      await tight.stop();
    }
  });

  it.skipIf(process.getuid?.() !== 0)('ENOSPC mid-write: the segment closes cleanly marked truncated, then new tracks get DISK_FULL', async () => {
    const mnt = path.join(rec.dataDir, 'tiny');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
    const small = await startTestRecorder({ RECORDINGS_DIR: mnt, RECORDER_MIN_FREE_MB: '0' });
    try {
      const started = await small.api('POST', '/v1/tracks', trackReq('big', 's-full', 'r-full'));
      expect(started.status).toBe(201);
      const s = await socket();
      await sendAll(s, Array.from({ length: 600 }, (_, i) => rtp(i, SSRC, PT, 1400)), started.body.rtpPort);
      await expect.poll(async () => (await small.api('GET', '/v1/health')).body.acceptingTracks, { timeout: 10_000 }).toBe(false);
      const refused = await small.api('POST', '/v1/tracks', trackReq('next', 's-full', 'r-full'));
      expect(refused.body.error.code).toBe('DISK_FULL');
      await small.api('POST', '/v1/sessions/s-full/end', { v: 1, room: 'r-full', reason: 'test' }).catch(() => undefined);
      // The manifest may not fit on a full disk; the journal or manifest must still say truncated.
      const dir = path.join(mnt, 'r-full', 's-full');
      const file = existsSync(path.join(dir, 'manifest.json')) ? 'manifest.json' : 'session.json';
      const m = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
      const seg = m.tracks[0].segments[0];
      expect(seg).toMatchObject({ truncated: true, truncatedReason: 'ENOSPC', endReason: 'write-failed' });
      const parsed = parseRecording(readFileSync(path.join(dir, seg.file)));
      expect(parsed.tornBytes).toBe(0);
      expect(parsed.records.length).toBe(seg.rtpPackets);
      s.close();
    } finally {
      await small.stop();
      execFileSync('umount', ['-l', mnt]);
    }
  });
});
