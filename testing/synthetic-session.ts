import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SESSION_MANIFEST_VERSION, type Codec, type SessionManifest } from '../services/lib/contracts/recording.ts';
import { RecordType, encodeFileHeader, encodeRecord, parseRecording } from '../services/lib/recording/vrtp-format.ts';
import { sampleHeader } from './recording-fixtures.ts';
import { oggPackets } from '../services/lib/media/ogg-packets.ts';

/** Real Opus packets: ffmpeg encodes a tone to Ogg Opus; we pull the packets back out of the Ogg pages. */
function realOpusPackets(seconds: number, root: string): Buffer[] {
  const ogg = path.join(root, `tone-${seconds}.ogg`);
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`, '-ac', '2', '-c:a', 'libopus', '-frame_duration', '20', '-b:a', '32k', ogg]);
  return oggPackets(readFileSync(ogg));
}

function rtp(seq: number, ts: number, ssrc: number, payload: Buffer, pt = 100, marker = false): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 0x80;
  h[1] = pt | (marker ? 0x80 : 0);
  h.writeUInt16BE(seq & 0xffff, 2);
  h.writeUInt32BE(ts >>> 0, 4);
  h.writeUInt32BE(ssrc, 8);
  return Buffer.concat([h, payload]);
}

/** A deterministic pseudo-random sequence in [0, 1). */
function lcg(seed: number): () => number {
  let v = seed;
  return () => (v = (v * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
}

const TS_MOD = 2 ** 32;

/**
 * The RTP timestamp of junk packet k, given the timestamp a real packet sent then would carry:
 * minutes backwards, ~19 hours ahead (the 68,672 s session of issue 12), or anything at all.
 */
export function junkTimestamp(k: number, realTs: number, rand: () => number): number {
  const ts = k % 3 === 0 ? realTs - (60 + 7 * k) * 48_000 : k % 3 === 1 ? realTs + (68_000 + 13 * k) * 48_000 : Math.floor(rand() * TS_MOD);
  return ((ts % TS_MOD) + TS_MOD) % TS_MOD;
}

/**
 * A recorder segment from packets sent every 20 ms, with losses, DTX pauses, duplicates and reordering.
 * `startSec` shifts the whole track (arrival, RTP timestamp, sequence) as a sender that kept sending would: a later segment of the same stream.
 * `junk` packets (this track's SSRC and payload type, random payloads, absurd timestamps: see junkTimestamp) are
 * spread over the track as a hostile sender's would be; like the SFU, which renumbers what it forwards, they take
 * their place in the sequence numbers.
 */
export function syntheticTrack(opts: { seconds: number; lossPct: number; dtx: [number, number][]; seed: number; startSec?: number; junk?: number }, root: string) {
  const packets = realOpusPackets(opts.seconds, root);
  const ssrc = 0xabc;
  let rnd = opts.seed;
  const rand = () => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const shift = opts.startSec ?? 0;
  const t0 = 1_700_000_000_000_000 + shift * 1e6;
  const records: Buffer[] = [];
  let lost = 0;
  const seq0 = 65_500 + shift * 50; // wraps during the track
  const ts0 = 0xffff_0000 + shift * 48_000; // wraps too
  const list: { i: number; at: number }[] = [];
  packets.forEach((_, i) => {
    const t = i * 0.02;
    if (opts.dtx.some(([a, b]) => t >= a && t < b)) return; // sender silent: DTX
    if (rand() * 100 < opts.lossPct) {
      lost++;
      return;
    }
    list.push({ i, at: t0 + i * 20_000 + Math.floor(rand() * 3000) });
  });
  // a few duplicates and swaps, as networks do
  for (let k = 5; k < list.length - 1; k += 97) [list[k], list[k + 1]] = [list[k + 1]!, list[k]!];
  for (let k = 11; k < list.length; k += 131) list.splice(k, 0, list[k]!);
  // Junk packet k goes right after the list entry it is spread onto, 1 µs later.
  const junkAfter = new Map<number, { key: number; ts: number; payload: Buffer }[]>();
  const jrand = lcg(opts.seed + 7919);
  for (let k = 0; k < (opts.junk ?? 0); k++) {
    const at = Math.floor(((k + 0.5) * list.length) / opts.junk!);
    const host = list[at]!;
    const payload = Buffer.from(Array.from({ length: 20 + (k % 40) }, () => Math.floor(jrand() * 256)));
    const entry = { key: host.i + 0.5 + k / 1e6, ts: junkTimestamp(k, (ts0 + host.i * 960) % TS_MOD, jrand), payload };
    junkAfter.set(at, [...(junkAfter.get(at) ?? []), entry]);
  }
  // DTX sends nothing: sequence numbers run on, timestamps jump.
  let seq = seq0;
  const seqOf = new Map<number, number>();
  const keys = [...new Set([...list.map((x) => x.i), ...[...junkAfter.values()].flat().map((j) => j.key)])].sort((a, b) => a - b);
  for (const key of keys) seqOf.set(key, seq++);
  list.forEach(({ i, at }, n) => {
    records.push(encodeRecord(RecordType.RTP, at, rtp(seqOf.get(i)!, (ts0 + i * 960) % TS_MOD, ssrc, packets[i]!)));
    for (const j of junkAfter.get(n) ?? []) records.push(encodeRecord(RecordType.RTP, at + 1, rtp(seqOf.get(j.key)!, j.ts, ssrc, j.payload)));
  });
  const wallSpan = (packets.length - 1) * 0.02 + 0.02;
  return { records, ssrc, lost, wallSpan, t0, packets: packets.length, junk: opts.junk ?? 0 };
}

/**
 * A segment whose every packet is junk: sent every 20 ms in sequence, but each timestamp
 * 10 s behind the one before (a clock that runs backwards, far faster than time).
 */
export function syntheticJunkTrack(opts: { seconds: number; ssrc: number; payloadType?: number }) {
  const rand = lcg(4242);
  const t0 = 1_700_000_000_000_000;
  const records: Buffer[] = [];
  const n = Math.round(opts.seconds / 0.02);
  for (let k = 0; k < n; k++) {
    const ts = (((3_000_000_000 - k * 480_000) % TS_MOD) + TS_MOD) % TS_MOD;
    const payload = Buffer.from(Array.from({ length: 40 }, () => Math.floor(rand() * 256)));
    records.push(encodeRecord(RecordType.RTP, t0 + k * 20_000, rtp(7000 + k, ts, opts.ssrc, payload, opts.payloadType ?? 100)));
  }
  return { records, t0, packets: n };
}

const VP8_CODEC = { mimeType: 'video/VP8', clockRate: 90000, payloadType: 101, parameters: {} };

/**
 * A VP8 recorder segment: ffmpeg encodes 15 fps test video, and each IVF frame is sent as
 * RTP (RFC 7741: 1-byte descriptor, start bit on a frame's first packet, marker on its last).
 * `startSec` places it later on the same stream (clocks running on), as after a recorder restart.
 */
export function syntheticVp8Track(opts: { seconds: number; startSec?: number }, root: string) {
  const ivf = path.join(root, `video-${opts.seconds}.ivf`);
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc=s=160x120:r=15:d=${opts.seconds}`, '-c:v', 'libvpx', '-g', '15', '-b:v', '200k', '-f', 'ivf', ivf]);
  const buf = readFileSync(ivf);
  const frames: Buffer[] = [];
  for (let off = buf.readUInt16LE(6); off + 12 <= buf.length; ) {
    const n = buf.readUInt32LE(off);
    frames.push(buf.subarray(off + 12, off + 12 + n));
    off += 12 + n;
  }
  const shift = opts.startSec ?? 0;
  const ssrc = 0xdef;
  const t0 = 1_700_000_000_000_000 + shift * 1e6;
  let seq = 1000 + shift * 100;
  const records: Buffer[] = [];
  frames.forEach((f, i) => {
    const ts = 90_000 * shift + i * 6000;
    for (let k = 0; k < f.length; k += 1000) {
      const payload = Buffer.concat([Buffer.from([k === 0 ? 0x10 : 0x00]), f.subarray(k, k + 1000)]);
      records.push(encodeRecord(RecordType.RTP, t0 + Math.round((i * 1e6) / 15), rtp(seq++, ts, ssrc, payload, VP8_CODEC.payloadType, k + 1000 >= f.length)));
    }
  });
  return { records, ssrc, t0, frames: frames.length };
}

/** Writes one segment file and returns its manifest entry. */
function writeSegment(dir: string, file: string, segment: number, header: ReturnType<typeof sampleHeader>, records: Buffer[], seconds: number): SessionManifest['tracks'][number]['segments'][number] {
  const bytes = Buffer.concat([encodeFileHeader(header), ...records]);
  writeFileSync(path.join(dir, file), bytes);
  return { segment, file, ssrc: header.ssrc, startedAt: header.startedAt, startedAtUs: header.startedAtUs, endedAt: header.startedAt, endReason: 'session-ended', bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), rtpPackets: records.length, rtcpPackets: 0, firstArrivalUs: header.startedAtUs, lastArrivalUs: header.startedAtUs + seconds * 1e6, truncated: false };
}

/**
 * `codecs` labels the tracks (segment headers and manifest) with another codec than the
 * Opus/VP8 they carry, at the same payload type: a recording of a codec transcode may not know.
 */
/**
 * `junk`: that many junk RTP packets on the audio track (see syntheticTrack); `junkTrack`: a
 * second participant (q) whose audio track holds nothing but junk (see syntheticJunkTrack).
 */
export function syntheticSession(root: string, mutate: (dir: string, m: SessionManifest) => void = () => {}, opts: { seconds?: number; session?: string; transcribe?: boolean; silences?: [number, number][]; restart?: { gapSeconds: number; seconds: number }; video?: boolean; codecs?: { audio?: Codec; video?: Codec }; junk?: number; junkTrack?: boolean } = {}): string {
  const dir = mkdtempSync(path.join(root, 'sess-'));
  const track = syntheticTrack({ seconds: opts.seconds ?? 2, lossPct: 0, dtx: opts.silences ?? [], seed: 1, ...(opts.junk ? { junk: opts.junk } : {}) }, root);
  const header = sampleHeader({ ssrc: track.ssrc, startedAtUs: track.t0, track: 'a', session: opts.session ?? 's', room: 'r', ...(opts.codecs?.audio ? { codec: opts.codecs.audio } : {}) });
  const bytes = Buffer.concat([encodeFileHeader(header), ...track.records]);
  writeFileSync(path.join(dir, 'a-0.vrtp'), bytes);
  const m: SessionManifest = {
    format: 'verbatim-session',
    version: SESSION_MANIFEST_VERSION,
    room: 'r',
    session: opts.session ?? 's',
    startedAt: new Date(track.t0 / 1000).toISOString(),
    endedAt: new Date(track.t0 / 1000 + (opts.seconds ?? 2) * 1000).toISOString(),
    endReason: 'test',
    participants: [{ id: 'p', name: 'P', consent: { decision: 'granted' } }],
    tracks: [{ track: 'a', participant: 'p', kind: 'audio', codec: header.codec, headerExtensions: [], segments: [{ segment: 0, file: 'a-0.vrtp', ssrc: track.ssrc, startedAt: header.startedAt, startedAtUs: track.t0, endedAt: header.startedAt, endReason: 'session-ended', bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), rtpPackets: track.records.length, rtcpPackets: 0, firstArrivalUs: track.t0, lastArrivalUs: track.t0 + (opts.seconds ?? 2) * 1e6, truncated: false }] }],
    gaps: [],
    events: opts.transcribe ? [{ at: new Date(track.t0 / 1000).toISOString(), type: 'recording-on', details: { transcribe: true, language: 'en' } }] : [],
    dropped: {},
  };
  if (opts.restart) {
    // The recorder restarted: the same stream (SSRC, clocks running on) continues in a new segment file after a gap.
    const startSec = (opts.seconds ?? 2) + opts.restart.gapSeconds;
    const t2 = syntheticTrack({ seconds: opts.restart.seconds, lossPct: 0, dtx: [], seed: 2, startSec }, root);
    const h2 = sampleHeader({ segment: 1, ssrc: t2.ssrc, startedAtUs: t2.t0, track: 'a', session: opts.session ?? 's', room: 'r', codec: header.codec });
    const b2 = Buffer.concat([encodeFileHeader(h2), ...t2.records]);
    writeFileSync(path.join(dir, 'a-1.vrtp'), b2);
    m.tracks[0]!.segments.push({ ...m.tracks[0]!.segments[0]!, segment: 1, file: 'a-1.vrtp', startedAt: h2.startedAt, startedAtUs: t2.t0, bytes: b2.length, sha256: createHash('sha256').update(b2).digest('hex'), rtpPackets: t2.records.length, firstArrivalUs: t2.t0, lastArrivalUs: t2.t0 + opts.restart.seconds * 1e6 });
    m.endedAt = new Date(t2.t0 / 1000 + opts.restart.seconds * 1000).toISOString();
  }
  if (opts.video) {
    // The same participant's camera, with the same restart gap as the microphone.
    const spans: [number, number][] = [[0, opts.seconds ?? 2]];
    if (opts.restart) spans.push([(opts.seconds ?? 2) + opts.restart.gapSeconds, opts.restart.seconds]);
    const segments = spans.map(([startSec, seconds], i) => {
      const v = syntheticVp8Track({ seconds, startSec }, root);
      const h = sampleHeader({ segment: i, kind: 'video', codec: opts.codecs?.video ?? VP8_CODEC, ssrc: v.ssrc, startedAtUs: v.t0, startedAt: new Date(v.t0 / 1000).toISOString(), track: 'v', session: opts.session ?? 's', room: 'r' });
      return writeSegment(dir, `v-${i}.vrtp`, i, h, v.records, seconds);
    });
    m.tracks.push({ track: 'v', participant: 'p', kind: 'video', codec: opts.codecs?.video ?? VP8_CODEC, headerExtensions: [], segments });
  }
  if (opts.junkTrack) {
    const j = syntheticJunkTrack({ seconds: opts.seconds ?? 2, ssrc: 0x7777 });
    const h = sampleHeader({ ssrc: 0x7777, startedAtUs: j.t0, startedAt: new Date(j.t0 / 1000).toISOString(), track: 'j', participant: { id: 'q', name: 'Q' }, session: opts.session ?? 's', room: 'r', codec: header.codec });
    m.participants.push({ id: 'q', name: 'Q', consent: { decision: 'granted' } });
    m.tracks.push({ track: 'j', participant: 'q', kind: 'audio', codec: header.codec, headerExtensions: [], segments: [writeSegment(dir, 'j-0.vrtp', 0, h, j.records, opts.seconds ?? 2)] });
  }
  mutate(dir, m);
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
  return path.join(dir, 'manifest.json');
}


/** A speaker of `writeToneSession`: a tone track with silent (DTX, no packets) spans in seconds. */
export interface ToneSpeaker {
  id: string;
  name: string;
  track: string;
  dtx: [number, number][];
}

/**
 * A sealed session as the recorder leaves it: one 3 s Opus tone track per speaker (silent in its
 * DTX spans) in `<recordingsDir>/<room>/<session>/`, and its manifest.json. Returns the manifest,
 * its path and SHA-256, to register like the recorder does.
 */
export function writeToneSession(opts: { recordingsDir: string; scratch: string; room: string; session: string; speakers: ToneSpeaker[]; events?: (startedAt: string) => SessionManifest['events'] }): { dir: string; manifestPath: string; manifest: SessionManifest; sha: string } {
  const dir = path.join(opts.recordingsDir, opts.room, opts.session);
  mkdirSync(dir, { recursive: true });
  const tracks: SessionManifest['tracks'] = [];
  let t0 = 0;
  for (const p of opts.speakers) {
    const t = syntheticTrack({ seconds: 3, lossPct: 0, dtx: p.dtx, seed: 7 }, opts.scratch);
    t0 = t.t0;
    const header = sampleHeader({ ssrc: t.ssrc, startedAtUs: t.t0, track: p.track, session: opts.session, room: opts.room, participant: { id: p.id, name: p.name } });
    const bytes = Buffer.concat([encodeFileHeader(header), ...t.records]);
    const file = `${p.track}-0.vrtp`;
    writeFileSync(path.join(dir, file), bytes);
    // As the recorder notes them: the first and last arrival actually in the file.
    const { records } = parseRecording(bytes, file);
    tracks.push({
      track: p.track,
      participant: p.id,
      kind: 'audio',
      codec: header.codec,
      headerExtensions: [],
      segments: [
        {
          segment: 0,
          file,
          ssrc: t.ssrc,
          startedAt: header.startedAt,
          startedAtUs: t.t0,
          endedAt: header.startedAt,
          endReason: 'session-ended',
          bytes: bytes.length,
          sha256: createHash('sha256').update(bytes).digest('hex'),
          rtpPackets: t.records.length,
          rtcpPackets: 0,
          firstArrivalUs: records[0]!.arrivalUs,
          lastArrivalUs: records.at(-1)!.arrivalUs,
          truncated: false,
        },
      ],
    });
  }
  const manifest: SessionManifest = {
    format: 'verbatim-session',
    version: SESSION_MANIFEST_VERSION,
    room: opts.room,
    session: opts.session,
    startedAt: new Date(t0 / 1000).toISOString(),
    endedAt: new Date(t0 / 1000 + 3000).toISOString(),
    endReason: 'test',
    participants: opts.speakers.map((p) => ({ id: p.id, name: p.name, consent: { decision: 'granted' as const } })),
    tracks,
    gaps: [],
    events: opts.events?.(new Date(t0 / 1000).toISOString()) ?? [],
    dropped: {},
  };
  const body = JSON.stringify(manifest);
  const manifestPath = path.join(dir, 'manifest.json');
  writeFileSync(manifestPath, body);
  return { dir, manifestPath, manifest, sha: createHash('sha256').update(body).digest('hex') };
}
