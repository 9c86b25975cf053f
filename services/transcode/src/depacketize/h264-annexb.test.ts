import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { RecordType, encodeFileHeader, encodeRecord } from '../../../lib/recording/vrtp-format.ts';
import { sampleHeader } from '../../../../testing/recording-fixtures.ts';
import { FluentFfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { runSessionPipeline } from '../session-pipeline.ts';
import { syntheticSession } from '../../../../testing/synthetic-session.ts';
import { annexBToIvf, rtpH264ToAnnexB } from './h264-annexb.ts';
import { readTrackPackets, type RtpPacket } from './rtp-stream.ts';

const FRAMES = 45; // 3 s at 15 fps, IDR every 15 frames
const SSRC = 1234;
const root = mkdtempSync(path.join(os.tmpdir(), 'verbatim-h264-'));

/** Real H.264 RTP: ffmpeg (libx264 → RFC 6184 packetizer) sends to a socket we bind. */
function captureH264Rtp(): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
    const got: Buffer[] = [];
    sock.on('message', (m) => got.push(m));
    sock.on('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      const { port } = sock.address();
      const ff = spawn('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=15', '-t', '3', '-c:v', 'libx264', '-profile:v', 'baseline', '-bf', '0', '-g', '15', '-f', 'rtp', '-payload_type', '102', '-ssrc', String(SSRC), `rtp://127.0.0.1:${port}?pkt_size=600`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      ff.stderr.on('data', (d) => (err += d));
      ff.on('exit', (code) => {
        setTimeout(() => {
          sock.close();
          if (code !== 0) reject(new Error(`ffmpeg rtp sender failed: ${err}`));
          else resolve(got);
        }, 200);
      });
    });
  });
}

/** Rewrites sequence numbers and timestamps from chosen starting points (unwrapped, in order). */
function renumber(raw: Buffer[], seq0: number, ts0: number): Buffer[] {
  const firstTs = raw[0]!.readUInt32BE(4);
  return raw.map((b, i) => {
    const c = Buffer.from(b);
    c.writeUInt16BE((seq0 + i) & 0xffff, 2);
    c.writeUInt32BE((ts0 + (b.readUInt32BE(4) - firstTs)) >>> 0, 4);
    return c;
  });
}

/** RTP datagrams → RtpPacket (extended seq/ts: plain, no wraparound in these). */
function toPackets(raw: Buffer[]): RtpPacket[] {
  return raw.map((b, i) => ({ seq: 100_000 + i, ts: 1_000_000 + b.readUInt32BE(4) - raw[0]!.readUInt32BE(4), marker: (b[1]! & 0x80) !== 0, payload: b.subarray(12), arrivalUs: 0 }));
}

function withPayload(b: Buffer, payload: Buffer, marker = (b[1]! & 0x80) !== 0): Buffer {
  const c = Buffer.concat([b.subarray(0, 12), payload]);
  c[1] = (c[1]! & 0x7f) | (marker ? 0x80 : 0);
  return c;
}

const nalType = (b: Buffer) => b[12]! & 0x1f;

/** NAL unit types of an Annex B stream, in order. */
function annexBTypes(data: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i + 4 < data.length; i++) if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 0 && data[i + 3] === 1) out.push(data[i + 4]! & 0x1f);
  return out;
}

/** Decodes a raw .h264 file fully; returns the decoded frame count and ffmpeg's error output. */
function decode(data: Buffer, name: string): { frames: number; errors: string } {
  const file = path.join(root, `${name}.h264`);
  writeFileSync(file, data);
  const r = spawnSync('ffmpeg', ['-v', 'error', '-f', 'h264', '-i', file, '-f', 'framemd5', '-'], { encoding: 'utf8' });
  return { frames: r.stdout.split('\n').filter((l) => /^\s*0,/.test(l)).length, errors: r.stderr.trim() };
}

/** Packet index ranges of each access unit (by RTP timestamp). */
function accessUnits(raw: Buffer[]): { ts: number; from: number; to: number }[] {
  const aus: { ts: number; from: number; to: number }[] = [];
  raw.forEach((b, i) => {
    const ts = b.readUInt32BE(4);
    if (aus.at(-1)?.ts === ts) aus.at(-1)!.to = i;
    else aus.push({ ts, from: i, to: i });
  });
  return aus;
}

let raw: Buffer[];
beforeAll(async () => {
  raw = await captureH264Rtp();
  // The capture itself must be lossless, or the tests below would measure the network.
  for (let i = 1; i < raw.length; i++) expect(raw[i]!.readUInt16BE(2)).toBe((raw[i - 1]!.readUInt16BE(2) + 1) & 0xffff);
  expect(accessUnits(raw)).toHaveLength(FRAMES);
}, 60_000);

describe('rtpH264ToAnnexB (RFC 6184, packetization-mode 1)', () => {
  it('depacketizes real libx264 RTP (FU-A, STAP-A) into a stream ffmpeg decodes without errors', () => {
    expect(raw.some((b) => nalType(b) === 28)).toBe(true); // pkt_size=600 forces FU-A
    const r = rtpH264ToAnnexB(toPackets(raw));
    expect(r.frames).toBe(FRAMES);
    expect(r.keyframes).toBeGreaterThanOrEqual(3);
    expect(r.skippedFrames).toBe(0);
    expect(r.frameTimestamps).toEqual(Array.from({ length: FRAMES }, (_, i) => i * 6000)); // 90 kHz / 15 fps
    expect(r.frameSizes.reduce((a, b) => a + b, 0)).toBe(r.data.length);
    const types = annexBTypes(r.data);
    expect(types.slice(0, 3)).toEqual([7, 8, ...types.slice(2, 3)]); // starts with SPS, PPS
    expect(types.find((t) => t === 1 || t === 5)).toBe(5); // first picture is an IDR
    const d = decode(r.data, 'clean');
    expect(d.errors).toBe('');
    expect(d.frames).toBe(FRAMES);
  });

  it('reads a hand-built STAP-A the same as the parameter sets sent one NAL per packet', () => {
    // Split every STAP-A into single NAL unit packets (types 1–23) ...
    const single: Buffer[] = [];
    const spsPps: Buffer[] = [];
    for (const b of raw) {
      if (nalType(b) !== 24) {
        single.push(b);
        continue;
      }
      let off = 13;
      while (off < b.length) {
        const n = b.subarray(off + 2, off + 2 + b.readUInt16BE(off));
        single.push(withPayload(b, n, false));
        if (spsPps.length < 2 && ((n[0]! & 0x1f) === 7 || (n[0]! & 0x1f) === 8)) spsPps.push(n);
        off += 2 + n.length;
      }
    }
    const a = rtpH264ToAnnexB(toPackets(single));
    expect(a.frames).toBe(FRAMES);
    // ... and then pack SPS + PPS back into a STAP-A of our own in front of the first IDR.
    expect(spsPps.map((n) => n[0]! & 0x1f)).toEqual([7, 8]);
    const sizes = spsPps.map((n) => Buffer.from([n.length >> 8, n.length & 0xff]));
    const stap = Buffer.concat([Buffer.from([(spsPps[0]![0]! & 0x60) | 24]), sizes[0]!, spsPps[0]!, sizes[1]!, spsPps[1]!]);
    const firstPs = single.findIndex((b) => nalType(b) === 7);
    const hand = [...single.slice(0, firstPs), withPayload(single[firstPs]!, stap, false), ...single.slice(firstPs + 2)];
    const b = rtpH264ToAnnexB(toPackets(hand));
    expect(b.frames).toBe(FRAMES);
    expect(b.data.equals(a.data)).toBe(true);
    expect(decode(b.data, 'stap').errors).toBe('');

    // A STAP-A whose size field overruns the packet damages its AU: output waits for the next IDR.
    const bad = Buffer.from(stap);
    bad.writeUInt16BE(0xfff0, 1);
    const c = rtpH264ToAnnexB(toPackets([...single.slice(0, firstPs), withPayload(single[firstPs]!, bad, false), ...single.slice(firstPs + 2)]));
    expect(c.frames).toBe(FRAMES - 15);
    expect(c.skippedFrames).toBeGreaterThanOrEqual(1);
  });

  it('inserts the last SPS/PPS before an IDR that arrives without them', () => {
    let seen = 0;
    const stripped = raw.filter((b) => nalType(b) !== 24 || seen++ === 0); // parameter sets only once
    expect(stripped.length).toBe(raw.length - 2);
    const r = rtpH264ToAnnexB(toPackets(stripped));
    expect(r.frames).toBe(FRAMES);
    const types = annexBTypes(r.data).filter((t) => t !== 6);
    // every IDR is preceded by SPS, PPS
    types.forEach((t, i) => t === 5 && expect(types.slice(i - 2, i)).toEqual([7, 8]));
    expect(types.filter((t) => t === 5)).toHaveLength(3);
    expect(decode(r.data, 'inserted').errors).toBe('');
  });

  it('skips the AU with a dropped FU-A fragment and everything up to the next IDR', () => {
    const aus = accessUnits(raw);
    const victim = aus[20]!; // a P frame in the second GOP (IDRs at 0, 15, 30)
    expect(victim.to - victim.from).toBeGreaterThanOrEqual(2); // fragmented: has a middle fragment
    const mid = victim.from + 1;
    expect(nalType(raw[mid]!)).toBe(28);
    const r = rtpH264ToAnnexB(toPackets(raw).filter((_, i) => i !== mid));
    expect(r.frames).toBe(FRAMES - 10); // frames 20–29 are gone
    expect(r.skippedFrames).toBe(10);
    expect(r.frameTimestamps).not.toContain(20 * 6000);
    expect(r.frameTimestamps).not.toContain(29 * 6000);
    expect(r.frameTimestamps).toContain(30 * 6000);
    const d = decode(r.data, 'fu-loss');
    expect(d.errors).toBe('');
    expect(d.frames).toBe(FRAMES - 10);

    // A lost start fragment of an IDR: its whole GOP goes.
    const idr = aus[15]!;
    const startIdx = raw.findIndex((b, i) => i >= idr.from && nalType(b) === 28 && (b[13]! & 0x80) !== 0);
    const s = rtpH264ToAnnexB(toPackets(raw).filter((_, i) => i !== startIdx));
    expect(s.frames).toBe(FRAMES - 15);
    expect(decode(s.data, 'idr-loss').errors).toBe('');

    // A whole frame lost between two complete AUs: the following P frames reference it.
    const whole = rtpH264ToAnnexB(toPackets(raw).filter((_, i) => i < aus[5]!.from || i > aus[5]!.to));
    expect(whole.frames).toBe(FRAMES - 10); // 5 lost + 6–14 skipped
    expect(whole.skippedFrames).toBe(9);
    expect(whole.frameTimestamps.slice(4, 6)).toEqual([4 * 6000, 15 * 6000]);
    expect(decode(whole.data, 'frame-loss').errors).toBe('');
  });

  it('counts and drops interleaved-mode packets (STAP-B, MTAP, FU-B)', () => {
    const aus = accessUnits(raw);
    const victim = aus[3]!.from;
    const mangled = raw.map((b, i) => (i === victim ? withPayload(b, Buffer.concat([Buffer.from([(b[12]! & 0xe0) | 29]), b.subarray(13)])) : b));
    const r = rtpH264ToAnnexB(toPackets(mangled));
    expect(r.unsupportedPackets).toBe(1);
    expect(r.frames).toBe(FRAMES - 12); // frames 3–14
    expect(decode(r.data, 'fub').errors).toBe('');
  });

  it('survives sequence-number and timestamp wraparound through the recorder format', () => {
    const wrapped = renumber(raw, 65_536 - 40, 0xffff_ffff - 90_000); // both wrap mid-stream
    const header = sampleHeader({ kind: 'video', ssrc: SSRC, codec: { mimeType: 'video/H264', clockRate: 90000, payloadType: 102, parameters: { 'packetization-mode': 1 } } });
    const buf = Buffer.concat([encodeFileHeader(header), ...wrapped.map((b, i) => encodeRecord(RecordType.RTP, i * 1000, b))]);
    const t = readTrackPackets(buf, 'v.vrtp');
    expect(t.packets).toHaveLength(raw.length);
    const r = rtpH264ToAnnexB(t.packets);
    expect(r.frames).toBe(FRAMES);
    expect(r.skippedFrames).toBe(0);
    expect(r.lastTs! - r.firstTs!).toBe(44 * 6000);
    expect(decode(r.data, 'wrap').errors).toBe('');
  });

  it('keeps the RTP timing through IVF → Matroska, variable frame rate included', () => {
    const r = rtpH264ToAnnexB(toPackets(raw));
    // Stretch the second half: 15 fps then 7.5 fps.
    const vfr = { ...r, frameTimestamps: r.frameTimestamps.map((t, i) => (i < 20 ? t : 20 * 6000 + (i - 20) * 12000)) };
    const ivf = path.join(root, 'vfr.ivf');
    writeFileSync(ivf, annexBToIvf(vfr));
    const mkv = path.join(root, 'vfr.mkv');
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-i', ivf, '-c', 'copy', '-f', 'matroska', mkv]);
    const pts = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', mkv], { encoding: 'utf8' }).trim().split('\n').map(Number);
    expect(pts).toHaveLength(FRAMES);
    expect(pts[19]).toBeCloseTo(19 / 15, 2);
    expect(pts.at(-1)).toBeCloseTo(20 / 15 + 24 / 7.5, 2);
  });
});

describe('session pipeline with an H.264 video track', () => {
  it('depacketizes video/H264 into a Matroska piece, the participant file and an H.264 composite', async () => {
    const videoStartUs = 500_000; // the camera starts 0.5 s after the microphone
    const manifestPath = syntheticSession(
      root,
      (dir, m) => {
        const t0 = m.tracks[0]!.segments[0]!.startedAtUs;
        const packets = renumber(raw, 65_500, 0xffff_0000);
        const header = sampleHeader({ kind: 'video', track: 'v', ssrc: SSRC, startedAtUs: t0 + videoStartUs, codec: { mimeType: 'video/H264', clockRate: 90000, payloadType: 102, parameters: { 'packetization-mode': 1 } } });
        const ts0 = packets[0]!.readUInt32BE(4);
        const records = packets.map((b) => encodeRecord(RecordType.RTP, t0 + videoStartUs + Math.round((((b.readUInt32BE(4) - ts0) >>> 0) / 90) * 1000), b));
        const bytes = Buffer.concat([encodeFileHeader(header), ...records]);
        writeFileSync(path.join(dir, 'v-0.vrtp'), bytes);
        m.tracks.push({ track: 'v', participant: 'p', kind: 'video', codec: header.codec, headerExtensions: [], segments: [{ ...m.tracks[0]!.segments[0]!, file: 'v-0.vrtp', ssrc: SSRC, startedAtUs: t0 + videoStartUs, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), rtpPackets: records.length }] });
      },
      { seconds: 3 },
    );
    const out = mkdtempSync(path.join(root, 'out-'));
    const res = await runSessionPipeline(manifestPath, out, new FluentFfmpegRunner());

    const video = res.pieces.find((p) => p.kind === 'video')!;
    expect(video.file).toBe(path.join(out, 'tracks', 'v-0.mkv'));
    expect(video.offset).toBeCloseTo(0.5, 1);
    expect(video.duration).toBeCloseTo(44 / 15, 3);
    expect(readdirSync(path.join(out, 'tracks')).filter((f) => f.endsWith('.ivf') || f.endsWith('.tmp'))).toEqual([]);

    const probe = (file: string, entries: string) => execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-show_entries', entries, '-of', 'json', file], { encoding: 'utf8' });
    const piece = JSON.parse(probe(video.file, 'stream=codec_name,width,height,nb_read_frames')).streams;
    expect(piece).toEqual([{ codec_name: 'h264', width: 320, height: 240, nb_read_frames: String(FRAMES) }]);

    const av = path.join(out, 'participant-p.mkv');
    expect(existsSync(av)).toBe(true);
    expect(JSON.parse(probe(av, 'stream=codec_name')).streams.map((s: { codec_name: string }) => s.codec_name).sort()).toEqual(['h264', 'opus']);

    const composite = res.files.find((f) => f.kind === 'composite')!.path;
    const streams = JSON.parse(probe(composite, 'stream=codec_type,codec_name')).streams as { codec_type: string; codec_name: string }[];
    expect(streams.find((s) => s.codec_type === 'video')?.codec_name).toBe('h264');
    expect(streams.some((s) => s.codec_type === 'audio')).toBe(true);
    // The participant's picture (not just the black background) is in the composite: testsrc2 is colourful.
    const sat = spawnSync('ffmpeg', ['-v', 'info', '-ss', '2', '-i', composite, '-frames:v', '1', '-vf', 'signalstats,metadata=print:key=lavfi.signalstats.SATAVG', '-f', 'null', '-'], { encoding: 'utf8' });
    expect(Number(/SATAVG=([0-9.]+)/.exec(sat.stderr)?.[1])).toBeGreaterThan(10);
  }, 120_000);
});
