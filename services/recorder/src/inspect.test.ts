import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionManifest } from '../../lib/contracts/recording.ts';
import { runRecordingCommand } from './inspect-cli.ts';
import { inspectFile, verifySessionDir } from './inspect.ts';
import { RecordType, encodeRecord } from '../../lib/recording/vrtp-format.ts';
import { SegmentWriter, type SegmentSummary } from './segment-writer.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-inspect-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const SSRC = 1234;
const T0 = 1_700_000_000_000_000; // arrival µs of the first record

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

/** Builds a real RTP packet: fixed header, CSRCs, RFC 8285 extension, RFC 3550 padding. */
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
  b.writeUInt32BE(o.ssrc ?? SSRC, 8);
  let off = 12;
  for (const c of csrcs) off = b.writeUInt32BE(c, off);
  if (ext) {
    b.writeUInt16BE(0xbede, off);
    b.writeUInt16BE(o.extWords!, off + 2);
  }
  if (pad) b[b.length - 1] = pad;
  return b;
}

/** RTCP SR (PT 200) followed by an SDES CNAME: a typical compound packet. */
function senderReport(): Buffer {
  const sr = Buffer.alloc(28);
  sr[0] = 0x80;
  sr[1] = 200;
  sr.writeUInt16BE(6, 2);
  sr.writeUInt32BE(SSRC, 4);
  sr.writeUInt32BE(2_208_988_800 + 1_700_000_000, 8); // NTP seconds → 2023-11-14T22:13:20Z
  sr.writeUInt32BE(0x8000_0000, 12); // .5 s
  sr.writeUInt32BE(4_294_965_376, 16);
  sr.writeUInt32BE(5, 20);
  sr.writeUInt32BE(800, 24);
  const sdes = Buffer.alloc(16);
  sdes[0] = 0x81;
  sdes[1] = 202;
  sdes.writeUInt16BE(3, 2);
  sdes.writeUInt32BE(SSRC, 4);
  sdes[8] = 1; // CNAME
  sdes[9] = 4;
  sdes.write('abcd', 10, 'latin1');
  return Buffer.concat([sr, sdes]);
}

// 20 ms Opus frames: seq starts 3 below the 16-bit wrap, ts 2 frames below the 32-bit wrap.
const SEQ0 = 65533;
const TS0 = 0x1_0000_0000 - 1920;
const frame = (n: number, extra: Partial<RtpOpts> = {}) => rtp({ seq: SEQ0 + n, ts: TS0 + 960 * n, ...extra });

/**
 * Arrival order of logical frames n: 0 1 3 2 4 4 6 7 — frame 2 (seq 65535) arrives after
 * frame 3 (seq 0, ts wrapped to 0), frame 4 (seq 1) twice, frame 5 (seq 2) never.
 * Plus one packet of another SSRC (RTX-like) and an SR+SDES.
 */
const records: { type: RecordType; at: number; data: Buffer }[] = [
  { type: RecordType.RTP, at: T0, data: frame(0, { marker: true }) },
  { type: RecordType.RTP, at: T0 + 20_000, data: frame(1) },
  { type: RecordType.RTP, at: T0 + 40_000, data: frame(3) },
  { type: RecordType.RTP, at: T0 + 45_000, data: frame(2) },
  { type: RecordType.RTCP, at: T0 + 50_000, data: senderReport() },
  { type: RecordType.RTP, at: T0 + 80_000, data: frame(4) },
  { type: RecordType.RTP, at: T0 + 81_000, data: frame(4) },
  { type: RecordType.RTP, at: T0 + 90_000, data: rtp({ seq: 7, ts: 99, ssrc: 5555, pt: 101, payload: 10 }) },
  { type: RecordType.RTP, at: T0 + 120_000, data: frame(6) },
  { type: RecordType.RTP, at: T0 + 150_000, data: frame(7, { csrcs: [42], extWords: 1, padding: 3, payload: 20 }) },
];

function writeSegment(dir: string, name: string, over: Parameters<typeof sampleHeader>[0], recs = records): SegmentSummary {
  const w = new SegmentWriter(dir, name, sampleHeader(over), { fsyncIntervalMs: 1000, bufferBytes: 512 });
  for (const r of recs) expect(w.append(r.type, r.at, r.data)).toBe(true);
  return w.seal();
}

describe('inspectFile', () => {
  let file: string;
  beforeAll(() => {
    file = path.join(tmp, 'one', writeSegment(path.join(tmp, 'one'), 'track-a-0', {}).file);
  });

  it('reports exact stream statistics across a 16-bit seq wrap and a 32-bit ts wrap', () => {
    const r = inspectFile(file);
    expect(r.bytes).toBe(readFileSync(file).length);
    expect(r.header.ssrc).toBe(SSRC);
    expect(r.records).toEqual({ rtp: 9, rtcp: 1 });
    expect(r.tornBytes).toBe(0);
    expect(r.stopReason).toBeNull();
    expect(r.rtp).toMatchObject({
      ssrc: SSRC,
      payloadTypes: [100, 101],
      ssrcs: [SSRC, 5555],
      firstSequence: 65533,
      lastSequence: 4,
      firstTimestamp: TS0,
      lastTimestamp: 960 * 7 - 1920,
      durationSeconds: 0.15,
      rtpTimestampSpanSeconds: 0.14, // 7 frames × 960 / 48000
      sequenceGaps: 1,
      duplicates: 1,
      outOfOrder: 1,
      malformed: 0,
    });
    // 7 main-stream frames of 160 + one of 20, plus the other SSRC's 10.
    expect(r.rtp.payloadBytes).toBe(7 * 160 + 20 + 10);
    expect(r.rtp.streams.find((s) => s.ssrc === 5555)).toMatchObject({ packets: 1, sequenceGaps: 0, duplicates: 0, outOfOrder: 0, timestampSpan: 0 });
    expect(r.rtcp.types).toEqual({ SR: 1, SDES: 1 });
    expect(r.packets).toBeUndefined();
  });

  it('lists packets with RTP fields and parsed sender reports', () => {
    const r = inspectFile(file, { packets: true });
    expect(r.packets).toHaveLength(10);
    expect(r.packets![0]).toEqual({ index: 0, type: 'RTP', arrivalUs: T0, length: 172, seq: 65533, ts: TS0, pt: 100, ssrc: SSRC, marker: true, payloadLength: 160 });
    expect(r.packets![3]).toMatchObject({ seq: 65535, ts: 0, marker: false });
    expect(r.packets![9]).toMatchObject({ seq: 4, length: 12 + 4 + 8 + 20 + 3, payloadLength: 20 });
    const rtcp = r.packets![4]!;
    expect(rtcp.type).toBe('RTCP');
    expect(rtcp.rtcp!.map((p) => p.name)).toEqual(['SR', 'SDES']);
    expect(rtcp.rtcp![0]!.sr).toEqual({ ntpSeconds: 2_208_988_800 + 1_700_000_000, ntpFraction: 0x8000_0000, ntpTime: '2023-11-14T22:13:20.500Z', rtpTimestamp: 4_294_965_376, packetCount: 5, octetCount: 800 });
  });

  it('reports a torn tail and where reading stopped', () => {
    const torn = path.join(tmp, 'one', 'torn.vrtp');
    copyFileSync(file, torn);
    const rec = encodeRecord(RecordType.RTP, T0 + 200_000, frame(8));
    appendFileSync(torn, rec.subarray(0, rec.length - 5));
    const r = inspectFile(torn);
    expect(r.records).toEqual({ rtp: 9, rtcp: 1 });
    expect(r.tornBytes).toBe(rec.length - 5);
    expect(r.stopReason).toBe('truncated-record');
  });

  it('turns unreadable and foreign files into VerbatimErrors', () => {
    expect(() => inspectFile(path.join(tmp, 'nope.vrtp'))).toThrow(expect.objectContaining({ code: 'BAD_REQUEST', message: expect.stringContaining('ENOENT') }));
    const junk = path.join(tmp, 'junk.vrtp');
    writeFileSync(junk, 'not a recording at all');
    expect(() => inspectFile(junk)).toThrow(/bad magic/);
  });
});

/** The manifest the recorder would write, with sizes and hashes taken from the files themselves. */
function manifestFor(dir: string, segs: SegmentSummary[]): SessionManifest {
  const entry = (s: SegmentSummary, segment: number) => {
    const bytes = readFileSync(path.join(dir, s.file));
    return {
      segment,
      file: s.file,
      ssrc: SSRC,
      startedAt: new Date(0).toISOString(),
      startedAtUs: 0,
      endedAt: new Date(1000).toISOString(),
      endReason: 'track-stopped',
      bytes: bytes.length,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      rtpPackets: s.rtpPackets,
      rtcpPackets: s.rtcpPackets,
      firstArrivalUs: s.firstArrivalUs,
      lastArrivalUs: s.lastArrivalUs,
      truncated: false,
    };
  };
  return {
    format: 'verbatim-session',
    version: 1,
    room: 'r',
    session: 's',
    startedAt: new Date(0).toISOString(),
    endedAt: new Date(2000).toISOString(),
    endReason: 'room-closed',
    participants: [{ id: 'p', name: 'P', consent: { decision: 'granted', method: 'click' } }],
    tracks: [
      {
        track: 't',
        participant: 'p',
        kind: 'audio',
        codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} },
        headerExtensions: [],
        segments: segs.map((s, i) => entry(s, i)),
      },
    ],
    gaps: [],
    events: [],
    dropped: {},
  };
}

/** A session dir with two sealed segments of one track (9+1 and 4 records) and its manifest. */
function buildSession(dir: string): SegmentSummary[] {
  const segs = [writeSegment(dir, 't-0', { segment: 0 }), writeSegment(dir, 't-1', { segment: 1 }, records.slice(0, 4))];
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifestFor(dir, segs), null, 2));
  return segs;
}

describe('verifySessionDir', () => {
  const base = path.join(tmp, 'session-base');
  let segs: SegmentSummary[];
  beforeAll(() => {
    segs = buildSession(base);
  });

  let n = 0;
  const copy = () => {
    const dir = path.join(tmp, `session-${n++}`);
    cpSync(base, dir, { recursive: true });
    return dir;
  };
  const codes = (dir: string) => verifySessionDir(dir).problems.map((p) => `${p.code} ${p.file ?? ''}`);

  it('passes an intact session', () => {
    writeFileSync(path.join(base, '.session.json.done'), '{}'); // the recorder's retired journal is expected
    const r = verifySessionDir(base);
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.checked).toEqual({ manifest: true, tracks: 1, segments: 2, filesRead: 2, bytes: segs[0]!.bytes + segs[1]!.bytes, rtpPackets: 9 + 4, rtcpPackets: 1 });
  });

  it('a flipped byte is a sha256 and CRC problem for exactly that file', () => {
    const dir = copy();
    const f = path.join(dir, 't-1.vrtp');
    const buf = readFileSync(f);
    buf[buf.length - 10]! ^= 0x01; // inside the last record's payload
    writeFileSync(f, buf);
    expect(codes(dir)).toEqual(['SHA256_MISMATCH t-1.vrtp', 'CRC_MISMATCH t-1.vrtp']);
  });

  it('reports a missing file, a stray .part and an unlisted file', () => {
    const dir = copy();
    unlinkSync(path.join(dir, 't-0.vrtp'));
    writeFileSync(path.join(dir, 't-2.vrtp.part'), 'partial');
    writeFileSync(path.join(dir, 'extra.vrtp'), 'x');
    expect(codes(dir)).toEqual(['FILE_MISSING t-0.vrtp', 'UNLISTED_FILE extra.vrtp', 'PART_FILE t-2.vrtp.part']);
  });

  it('reports counts, header fields and a truncated-but-torn segment against the manifest', () => {
    const dir = copy();
    const m = manifestFor(dir, segs);
    const [s0, s1] = m.tracks[0]!.segments;
    s0!.rtpPackets = 8;
    s1!.ssrc = 999;
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
    expect(codes(dir)).toEqual(['COUNT_MISMATCH t-0.vrtp', 'HEADER_MISMATCH t-1.vrtp']);

    // A torn tail appended after sealing: size changes and the tail is unreadable.
    appendFileSync(path.join(dir, 't-0.vrtp'), Buffer.from([1, 0, 0]));
    s0!.rtpPackets = 9;
    s0!.truncated = true;
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
    const r = verifySessionDir(dir);
    expect(r.problems.filter((p) => p.file === 't-0.vrtp').map((p) => p.code)).toEqual(['SIZE_MISMATCH', 'TORN_TAIL']);
    expect(r.problems.find((p) => p.code === 'TORN_TAIL')!.message).toMatch(/marked truncated/);
  });

  it('reports manifest JSON and schema problems and still checks the files', () => {
    const dir = copy();
    writeFileSync(path.join(dir, 'manifest.json'), '{"format": "verbatim-session", ');
    expect(codes(dir)).toEqual(['MANIFEST_UNREADABLE manifest.json']);

    const m = manifestFor(dir, segs) as unknown as { tracks: { segments: { sha256: string }[] }[]; version: number };
    m.version = 2;
    m.tracks[0]!.segments[1]!.sha256 = 'nothex';
    writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
    const r = verifySessionDir(dir);
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => `${p.code} ${p.message.split(':')[0]}`)).toEqual(['MANIFEST_SCHEMA version', 'MANIFEST_SCHEMA tracks.0.segments.1.sha256']);

    // Without a manifest, internal damage in a sealed file is still found.
    unlinkSync(path.join(dir, 'manifest.json'));
    const f = path.join(dir, 't-0.vrtp');
    const buf = readFileSync(f);
    buf[buf.length - 1]! ^= 0xff;
    writeFileSync(f, buf);
    expect(codes(dir)).toEqual(['MANIFEST_MISSING manifest.json', 'CRC_MISMATCH t-0.vrtp']);
    writeFileSync(path.join(dir, 'session.json'), '{}');
    expect(verifySessionDir(dir).problems[0]!.message).toMatch(/journal present/);
  });
});

describe('verbatim recording', () => {
  let file: string;
  let session: string;
  beforeAll(() => {
    const dir = path.join(tmp, 'cli');
    file = path.join(dir, writeSegment(dir, 'track-c-0', { participant: { id: 'alice', name: 'Alice' } }).file);
    session = path.join(tmp, 'cli-session');
    buildSession(session);
  });
  const run = async (...args: string[]) => {
    let text = '';
    const code = await runRecordingCommand(args, (s) => {
      text += s;
    });
    return { code, text };
  };

  it('--header prints the JSON header', async () => {
    const { code, text } = await run('inspect', file, '--header');
    expect(code).toBe(0);
    expect(JSON.parse(text)).toEqual(sampleHeader({ participant: { id: 'alice', name: 'Alice' } }));
  });

  it('--json prints the inspect object, with packets only when asked', async () => {
    const plain = await run('inspect', file, '--json');
    expect(plain.code).toBe(0);
    const r = JSON.parse(plain.text);
    expect(r.records).toEqual({ rtp: 9, rtcp: 1 });
    expect(r.rtp.sequenceGaps).toBe(1);
    expect(r.rtp.rtpTimestampSpanSeconds).toBe(0.14);
    expect(r.packets).toBeUndefined();
    const withPackets = JSON.parse((await run('inspect', file, '--json', '--packets')).text);
    expect(withPackets.packets).toHaveLength(10);
    expect(withPackets.packets[4].rtcp[0].sr.ntpTime).toBe('2023-11-14T22:13:20.500Z');
  });

  it('prints a readable summary and one line per packet', async () => {
    const summary = (await run('inspect', file)).text;
    expect(summary).toMatch(/^participant\s+Alice \(alice\)$/m);
    expect(summary).toMatch(/^codec\s+audio\/opus, 48000 Hz, 2 ch, pt 100$/m);
    expect(summary).toMatch(/^duration\s+0\.150 s by arrival, 0\.140 s by RTP timestamp$/m);
    expect(summary).toMatch(/^sequence\s+65533 \.\. 4: 1 missing packet, 1 duplicate, 1 out of order$/m);
    const lines = (await run('inspect', file, '--packets')).text.trimEnd().split('\n');
    expect(lines).toHaveLength(10);
    expect(lines[0]).toBe('#0 RTP  +0.000000s len=172 seq=65533 ts=4294965376 pt=100 ssrc=1234 M payload=160');
    expect(lines[4]).toBe('#4 RTCP +0.050000s len=44 SR ssrc=1234 ntp=2023-11-14T22:13:20.500Z rtp=4294965376 packets=5 octets=800 | SDES ssrc=1234');
  });

  it('verify exits 0 when intact, 1 with problems, 2 on usage errors', async () => {
    const ok = await run('verify', session);
    expect(ok.code).toBe(0);
    expect(ok.text).toMatch(/^OK .*: 2 segments, 2 files/);
    const bad = path.join(tmp, 'cli-bad');
    cpSync(session, bad, { recursive: true });
    writeFileSync(path.join(bad, 'x.vrtp.part'), '');
    const fail = await run('verify', bad, '--json');
    expect(fail.code).toBe(1);
    expect(JSON.parse(fail.text).problems).toEqual([{ file: 'x.vrtp.part', code: 'PART_FILE', message: expect.any(String) }]);
    expect((await run('verify')).code).toBe(2);
    expect((await run('inspect', file, '--bogus')).code).toBe(2);
    expect((await run('frobnicate')).code).toBe(2);
  });

  it('bad files print the error and hint and exit 1', async () => {
    const junk = path.join(tmp, 'cli-junk.vrtp');
    writeFileSync(junk, 'garbage garbage garbage');
    const { code, text } = await run('inspect', junk);
    expect(code).toBe(1);
    expect(text).toBe(`error BAD_REQUEST: ${junk} is not a Verbatim recording (bad magic)\nfix: Pass a .vrtp track file written by the recorder.\n`);
  });
});
