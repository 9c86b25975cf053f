import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SESSION_MANIFEST_VERSION, type SessionManifest } from '../../lib/contracts/recording.ts';
import { RecordType, encodeFileHeader, encodeRecord } from '../../recorder/src/recording-format.ts';
import { sampleHeader } from '../../recorder/src/test-fixtures.ts';
import { oggPackets } from '../src/depacketize/ogg-packets.ts';

/** Real Opus packets: ffmpeg encodes a tone to Ogg Opus; we pull the packets back out of the Ogg pages. */
function realOpusPackets(seconds: number, root: string): Buffer[] {
  const ogg = path.join(root, `tone-${seconds}.ogg`);
  execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=440:sample_rate=48000:duration=${seconds}`, '-ac', '2', '-c:a', 'libopus', '-frame_duration', '20', '-b:a', '32k', ogg]);
  return oggPackets(readFileSync(ogg));
}

function rtp(seq: number, ts: number, ssrc: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h[0] = 0x80;
  h[1] = 100;
  h.writeUInt16BE(seq & 0xffff, 2);
  h.writeUInt32BE(ts >>> 0, 4);
  h.writeUInt32BE(ssrc, 8);
  return Buffer.concat([h, payload]);
}

/** A recorder segment from packets sent every 20 ms, with losses, DTX pauses, duplicates and reordering. */
export function syntheticTrack(opts: { seconds: number; lossPct: number; dtx: [number, number][]; seed: number }, root: string) {
  const packets = realOpusPackets(opts.seconds, root);
  const ssrc = 0xabc;
  let rnd = opts.seed;
  const rand = () => ((rnd = (rnd * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const t0 = 1_700_000_000_000_000;
  const records: Buffer[] = [];
  let lost = 0;
  const seq0 = 65_500; // wraps during the track
  const ts0 = 0xffff_0000; // wraps too
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
  // DTX sends nothing: sequence numbers run on, timestamps jump.
  let seq = seq0;
  const seqOf = new Map<number, number>();
  for (const { i } of [...new Map(list.map((x) => [x.i, x])).values()].sort((a, b) => a.i - b.i)) seqOf.set(i, seq++);
  for (const { i, at } of list) records.push(encodeRecord(RecordType.RTP, at, rtp(seqOf.get(i)!, ts0 + i * 960, ssrc, packets[i]!)));
  const wallSpan = (packets.length - 1) * 0.02 + 0.02;
  return { records, ssrc, lost, wallSpan, t0, packets: packets.length };
}

export function syntheticSession(root: string, mutate: (dir: string, m: SessionManifest) => void = () => {}, opts: { seconds?: number; session?: string; transcribe?: boolean; silences?: [number, number][] } = {}): string {
  const dir = mkdtempSync(path.join(root, 'sess-'));
  const track = syntheticTrack({ seconds: opts.seconds ?? 2, lossPct: 0, dtx: opts.silences ?? [], seed: 1 }, root);
  const header = sampleHeader({ ssrc: track.ssrc, startedAtUs: track.t0, track: 'a', session: opts.session ?? 's', room: 'r' });
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
  mutate(dir, m);
  writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
  return path.join(dir, 'manifest.json');
}

