import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SegmentEntry, SessionManifest, TrackHeader } from '../../lib/contracts/recording.ts';
import { checkManifest } from '../../lib/recording/manifest-file.ts';
import { JOURNAL_FILE, MANIFEST_FILE, PART_SUFFIX, RETIRED_JOURNAL_FILE, SEGMENT_EXTENSION } from '../../lib/recording/session-dir.ts';
import { VerbatimError } from '../../lib/errors.ts';
import { RecordType, parseRecording, type ParsedFile } from '../../lib/recording/vrtp-format.ts';
import { SEQUENCE_MODULUS, TIMESTAMP_MODULUS, parseRtcp, parseRtp, unwrapNear, type RtcpInfo, type RtpInfo } from '../../lib/rtp/index.ts';

/**
 * Read-only tools over recordings for operators and tests: what is in one track
 * segment file (`inspectFile`) and whether a session directory is intact against its
 * manifest (`verifySessionDir`). Pure: no console, no process.exit; the CLI prints.
 */

// ---------------------------------------------------------------- stream statistics

export interface StreamStats {
  ssrc: number;
  packets: number;
  payloadTypes: number[];
  /** First and last packet in arrival (file) order, not numeric order. */
  firstSequence: number;
  lastSequence: number;
  firstTimestamp: number;
  lastTimestamp: number;
  /** Sequence numbers never seen between the lowest and highest (16-bit wrap unrolled). */
  sequenceGaps: number;
  duplicates: number;
  /** Packets that arrived after a higher sequence number had already arrived. */
  outOfOrder: number;
  /** Highest minus lowest RTP timestamp after unwrapping 32-bit wraps packet by packet. */
  timestampSpan: number;
  firstArrivalUs: number;
  lastArrivalUs: number;
  payloadBytes: number;
}

/** Sequence/timestamp bookkeeping for one SSRC. */
class StreamTracker {
  private highestSeq = 0;
  private readonly seen = new Set<number>();
  private minSeq = 0;
  private prevTs = 0;
  private minTs = 0;
  private maxTs = 0;
  private readonly pts = new Set<number>();
  stats: StreamStats;

  constructor(p: RtpInfo, arrivalUs: number) {
    // Extended values start well above zero so a reorder right before a wrap stays positive.
    const ext = 0x1_0000_0000 + p.sequence;
    this.highestSeq = this.minSeq = ext;
    this.seen.add(ext);
    this.prevTs = this.minTs = this.maxTs = 0x1_0000_0000_0000 + p.timestamp;
    this.pts.add(p.payloadType);
    this.stats = {
      ssrc: p.ssrc,
      packets: 1,
      payloadTypes: [],
      firstSequence: p.sequence,
      lastSequence: p.sequence,
      firstTimestamp: p.timestamp,
      lastTimestamp: p.timestamp,
      sequenceGaps: 0,
      duplicates: 0,
      outOfOrder: 0,
      timestampSpan: 0,
      firstArrivalUs: arrivalUs,
      lastArrivalUs: arrivalUs,
      payloadBytes: p.payloadBytes,
    };
  }

  add(p: RtpInfo, arrivalUs: number): void {
    const s = this.stats;
    s.packets++;
    s.lastSequence = p.sequence;
    s.lastTimestamp = p.timestamp;
    s.lastArrivalUs = arrivalUs;
    s.payloadBytes += p.payloadBytes;
    this.pts.add(p.payloadType);
    // Nearest to the highest sequence so far: a wrap is a small step forward.
    const ext = unwrapNear(p.sequence, this.highestSeq, SEQUENCE_MODULUS);
    if (this.seen.has(ext)) s.duplicates++;
    else {
      this.seen.add(ext);
      if (ext < this.highestSeq) s.outOfOrder++;
    }
    if (ext > this.highestSeq) this.highestSeq = ext;
    if (ext < this.minSeq) this.minSeq = ext;
    // Timestamps unwrap against the previous packet, so reordering near a wrap is fine.
    this.prevTs = unwrapNear(p.timestamp, this.prevTs, TIMESTAMP_MODULUS);
    if (this.prevTs < this.minTs) this.minTs = this.prevTs;
    if (this.prevTs > this.maxTs) this.maxTs = this.prevTs;
  }

  finish(): StreamStats {
    this.stats.sequenceGaps = this.highestSeq - this.minSeq + 1 - this.seen.size;
    this.stats.timestampSpan = this.maxTs - this.minTs;
    this.stats.payloadTypes = [...this.pts].sort((a, b) => a - b);
    return this.stats;
  }
}

// ---------------------------------------------------------------- inspectFile

export interface PacketLine {
  index: number;
  type: 'RTP' | 'RTCP';
  arrivalUs: number;
  length: number;
  /** RTP */
  seq?: number;
  ts?: number;
  pt?: number;
  ssrc?: number;
  marker?: boolean;
  payloadLength?: number;
  /** RTCP (compound packets list every sub-packet) */
  rtcp?: RtcpInfo[];
  malformed?: boolean;
}

export interface InspectResult {
  file: string;
  bytes: number;
  headerBytes: number;
  header: TrackHeader;
  records: { rtp: number; rtcp: number };
  rtp: {
    /** Stats of the header's SSRC (or the first SSRC seen if the header's never appears). */
    ssrc: number | null;
    payloadTypes: number[];
    ssrcs: number[];
    firstSequence: number | null;
    lastSequence: number | null;
    firstTimestamp: number | null;
    lastTimestamp: number | null;
    /** Last minus first RTP arrival time, all SSRCs. */
    durationSeconds: number;
    /** RTP timestamp span of the main stream divided by the codec clock rate. */
    rtpTimestampSpanSeconds: number;
    sequenceGaps: number;
    duplicates: number;
    outOfOrder: number;
    payloadBytes: number;
    /** RTP records too short or inconsistent to parse. */
    malformed: number;
    streams: StreamStats[];
  };
  rtcp: { types: Record<string, number>; malformed: number };
  firstArrivalUs: number | null;
  lastArrivalUs: number | null;
  tornBytes: number;
  stopReason: ParsedFile['stopReason'] | null;
  packets?: PacketLine[];
}

export interface InspectOptions {
  packets?: boolean;
}

/** Reads and parses a file; fs and header-schema failures become VerbatimErrors with a hint. */
function readRecording(file: string): { buf: Buffer; parsed: ParsedFile } {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    throw new VerbatimError('BAD_REQUEST', `cannot read ${file}: ${code}`, { hint: code === 'ENOENT' ? 'Check the path; sealed segments end in .vrtp.' : 'Check permissions on the file.', cause: err });
  }
  try {
    return { buf, parsed: parseRecording(buf, file) };
  } catch (err) {
    if (err instanceof VerbatimError) throw err;
    // The header CRC held but its JSON is not a valid track header (schema or syntax).
    throw new VerbatimError('BAD_REQUEST', `${file} has an invalid track header: ${(err as Error).message}`, { hint: 'The file was written by an incompatible or broken recorder.', cause: err });
  }
}

export function inspectFile(file: string, opts: InspectOptions = {}): InspectResult {
  const { buf, parsed } = readRecording(file);
  return inspectParsed(file, buf.length, parsed, opts);
}

export function inspectParsed(file: string, bytes: number, parsed: ParsedFile, opts: InspectOptions = {}): InspectResult {
  const { header } = parsed;
  const streams = new Map<number, StreamTracker>();
  const allPts = new Set<number>();
  const rtcpTypes: Record<string, number> = {};
  let rtpCount = 0;
  let rtcpCount = 0;
  let rtpMalformed = 0;
  let rtcpMalformed = 0;
  let firstRtpUs: number | null = null;
  let lastRtpUs: number | null = null;
  const packets: PacketLine[] | undefined = opts.packets ? [] : undefined;

  parsed.records.forEach((rec, index) => {
    const line: PacketLine = { index, type: rec.type === RecordType.RTP ? 'RTP' : 'RTCP', arrivalUs: rec.arrivalUs, length: rec.data.length };
    if (rec.type === RecordType.RTP) {
      rtpCount++;
      if (firstRtpUs === null) firstRtpUs = rec.arrivalUs;
      lastRtpUs = rec.arrivalUs;
      const p = parseRtp(rec.data);
      if (!p) {
        rtpMalformed++;
        line.malformed = true;
      } else {
        allPts.add(p.payloadType);
        const t = streams.get(p.ssrc);
        if (t) t.add(p, rec.arrivalUs);
        else streams.set(p.ssrc, new StreamTracker(p, rec.arrivalUs));
        Object.assign(line, { seq: p.sequence, ts: p.timestamp, pt: p.payloadType, ssrc: p.ssrc, marker: p.marker, payloadLength: p.payloadBytes });
      }
    } else {
      rtcpCount++;
      const r = parseRtcp(rec.data);
      if (r.malformed) {
        rtcpMalformed++;
        line.malformed = true;
      }
      for (const sub of r.packets) rtcpTypes[sub.name] = (rtcpTypes[sub.name] ?? 0) + 1;
      line.rtcp = r.packets;
    }
    packets?.push(line);
  });

  const stats = [...streams.values()].map((t) => t.finish());
  const main = stats.find((s) => s.ssrc === header.ssrc) ?? stats[0];
  const sum = (k: 'sequenceGaps' | 'duplicates' | 'outOfOrder' | 'payloadBytes') => stats.reduce((n, s) => n + s[k], 0);
  const first = parsed.records[0];
  const last = parsed.records.at(-1);
  return {
    file,
    bytes,
    headerBytes: parsed.headerBytes,
    header,
    records: { rtp: rtpCount, rtcp: rtcpCount },
    rtp: {
      ssrc: main?.ssrc ?? null,
      payloadTypes: [...allPts].sort((a, b) => a - b),
      ssrcs: [...streams.keys()].sort((a, b) => a - b),
      firstSequence: main?.firstSequence ?? null,
      lastSequence: main?.lastSequence ?? null,
      firstTimestamp: main?.firstTimestamp ?? null,
      lastTimestamp: main?.lastTimestamp ?? null,
      durationSeconds: firstRtpUs !== null && lastRtpUs !== null ? (lastRtpUs - firstRtpUs) / 1e6 : 0,
      rtpTimestampSpanSeconds: main ? main.timestampSpan / header.codec.clockRate : 0,
      sequenceGaps: sum('sequenceGaps'),
      duplicates: sum('duplicates'),
      outOfOrder: sum('outOfOrder'),
      payloadBytes: sum('payloadBytes'),
      malformed: rtpMalformed,
      streams: stats,
    },
    rtcp: { types: rtcpTypes, malformed: rtcpMalformed },
    firstArrivalUs: first?.arrivalUs ?? null,
    lastArrivalUs: last?.arrivalUs ?? null,
    tornBytes: parsed.tornBytes,
    stopReason: parsed.stopReason ?? null,
    ...(packets ? { packets } : {}),
  };
}

// ---------------------------------------------------------------- verifySessionDir

/** Stable problem codes: scripts and alerting match on these, not on messages. */
export type VerifyCode =
  | 'NOT_A_DIRECTORY'
  | 'MANIFEST_MISSING'
  | 'MANIFEST_UNREADABLE'
  | 'MANIFEST_SCHEMA'
  | 'DUPLICATE_ENTRY'
  | 'FILE_MISSING'
  | 'SIZE_MISMATCH'
  | 'SHA256_MISMATCH'
  | 'BAD_HEADER'
  | 'HEADER_MISMATCH'
  | 'CRC_MISMATCH'
  | 'TORN_TAIL'
  | 'BAD_RECORD'
  | 'COUNT_MISMATCH'
  | 'ARRIVAL_MISMATCH'
  | 'PART_FILE'
  | 'UNLISTED_FILE';

export interface VerifyProblem {
  file?: string;
  code: VerifyCode;
  message: string;
}

export interface VerifyResult {
  ok: boolean;
  dir: string;
  problems: VerifyProblem[];
  checked: { manifest: boolean; tracks: number; segments: number; filesRead: number; bytes: number; rtpPackets: number; rtcpPackets: number };
}


const STOP_CODES: Record<NonNullable<ParsedFile['stopReason']>, VerifyCode> = {
  'crc-mismatch': 'CRC_MISMATCH',
  'truncated-record': 'TORN_TAIL',
  'bad-type': 'BAD_RECORD',
};

export function verifySessionDir(dir: string): VerifyResult {
  const problems: VerifyProblem[] = [];
  const checked: VerifyResult['checked'] = { manifest: false, tracks: 0, segments: 0, filesRead: 0, bytes: 0, rtpPackets: 0, rtcpPackets: 0 };
  const done = (): VerifyResult => ({ ok: problems.length === 0, dir, problems, checked });

  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    entries = readdirSync(dir).sort();
  } catch (err) {
    problems.push({ code: 'NOT_A_DIRECTORY', message: `cannot read session directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
    return done();
  }

  const manifest = loadManifest(dir, entries, problems);
  const listed = new Set<string>();

  if (manifest) {
    checked.manifest = true;
    checked.tracks = manifest.tracks.length;
    for (const track of manifest.tracks) {
      for (const seg of track.segments) {
        checked.segments++;
        if (listed.has(seg.file)) {
          problems.push({ file: seg.file, code: 'DUPLICATE_ENTRY', message: 'listed more than once in the manifest' });
          continue;
        }
        listed.add(seg.file);
        verifySegment(dir, manifest, track, seg, problems, checked);
      }
    }
  } else {
    // Without a usable manifest, still check every sealed file is internally sound.
    for (const name of entries.filter((e) => e.endsWith(SEGMENT_EXTENSION))) {
      listed.add(name);
      const parsed = readForVerify(path.join(dir, name), name, problems, checked);
      if (!parsed || !checkTail(name, parsed, false, problems)) continue;
      for (const r of parsed.records) {
        if (r.type === RecordType.RTP) checked.rtpPackets++;
        else checked.rtcpPackets++;
      }
    }
  }

  for (const name of entries) {
    if (name === MANIFEST_FILE || name === RETIRED_JOURNAL_FILE || listed.has(name)) continue;
    if (name === JOURNAL_FILE) {
      // Without a manifest this is already said by MANIFEST_MISSING; beside one it is stale.
      if (manifest) problems.push({ file: name, code: 'UNLISTED_FILE', message: 'stale recorder journal beside a sealed manifest' });
    } else if (name.endsWith(PART_SUFFIX)) {
      problems.push({ file: name, code: 'PART_FILE', message: 'unsealed leftover from a recorder crash (not in the manifest); recover or remove it' });
    } else {
      problems.push({ file: name, code: 'UNLISTED_FILE', message: 'present in the session directory but not listed in the manifest' });
    }
  }
  return done();
}

function loadManifest(dir: string, entries: string[], problems: VerifyProblem[]): SessionManifest | null {
  if (!entries.includes(MANIFEST_FILE)) {
    const why = entries.includes(JOURNAL_FILE) ? ` (${JOURNAL_FILE} journal present: the session is still recording or was interrupted and needs recovery)` : '';
    problems.push({ file: MANIFEST_FILE, code: 'MANIFEST_MISSING', message: `no manifest.json in the session directory${why}` });
    return null;
  }
  const r = checkManifest(path.join(dir, MANIFEST_FILE));
  if (r.ok) return r.manifest;
  if (r.reason === 'schema') {
    for (const issue of r.issues) {
      problems.push({ file: MANIFEST_FILE, code: 'MANIFEST_SCHEMA', message: `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}` });
    }
  } else {
    problems.push({ file: MANIFEST_FILE, code: 'MANIFEST_UNREADABLE', message: r.message });
  }
  return null;
}

function readForVerify(full: string, name: string, problems: VerifyProblem[], checked: VerifyResult['checked']): ParsedFile | null {
  let buf: Buffer;
  try {
    buf = readFileSync(full);
  } catch (err) {
    problems.push({ file: name, code: 'FILE_MISSING', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
    return null;
  }
  checked.filesRead++;
  checked.bytes += buf.length;
  try {
    return parseRecording(buf, name);
  } catch (err) {
    problems.push({ file: name, code: 'BAD_HEADER', message: (err as Error).message });
    return null;
  }
}

function checkTail(name: string, parsed: ParsedFile, truncated: boolean, problems: VerifyProblem[]): boolean {
  if (!parsed.stopReason && parsed.tornBytes === 0) return true;
  const code = parsed.stopReason ? STOP_CODES[parsed.stopReason] : 'TORN_TAIL';
  // A sealed file never has a torn tail: even a truncated one is cut back to its last record.
  const why = truncated ? ' (marked truncated, but a sealed file should end at its last complete record)' : '';
  problems.push({ file: name, code, message: `records stop after ${parsed.records.length} with ${parsed.tornBytes} unreadable bytes (${parsed.stopReason ?? 'torn tail'})${why}` });
  return false;
}

function verifySegment(dir: string, manifest: SessionManifest, track: SessionManifest['tracks'][number], seg: SegmentEntry, problems: VerifyProblem[], checked: VerifyResult['checked']): void {
  const name = seg.file;
  const full = path.join(dir, name);
  let buf: Buffer;
  try {
    buf = readFileSync(full);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = seg.stored ? ` (uploaded to storage as ${seg.stored.key} at ${seg.stored.at}; verify reads the session directory only)` : '';
    problems.push({ file: name, code: 'FILE_MISSING', message: code === 'ENOENT' ? `listed in the manifest but not on disk${where}` : `cannot read: ${code ?? (err as Error).message}` });
    return;
  }
  checked.filesRead++;
  checked.bytes += buf.length;

  if (buf.length !== seg.bytes) {
    // A different size already implies a different hash; one problem says it.
    problems.push({ file: name, code: 'SIZE_MISMATCH', message: `${buf.length} bytes on disk, manifest says ${seg.bytes}` });
  } else {
    const sha = createHash('sha256').update(buf).digest('hex');
    if (sha !== seg.sha256) problems.push({ file: name, code: 'SHA256_MISMATCH', message: `sha256 ${sha} on disk, manifest says ${seg.sha256}` });
  }

  let parsed: ParsedFile;
  try {
    parsed = parseRecording(buf, name);
  } catch (err) {
    problems.push({ file: name, code: 'BAD_HEADER', message: (err as Error).message });
    return;
  }

  const h = parsed.header;
  const mismatches: string[] = [];
  const cmp = (what: string, inFile: unknown, inManifest: unknown) => {
    if (inFile !== inManifest) mismatches.push(`${what} ${JSON.stringify(inFile)} in file vs ${JSON.stringify(inManifest)} in manifest`);
  };
  cmp('room', h.room, manifest.room);
  cmp('session', h.session, manifest.session);
  cmp('track', h.track, track.track);
  cmp('segment', h.segment, seg.segment);
  cmp('ssrc', h.ssrc, seg.ssrc);
  cmp('kind', h.kind, track.kind);
  cmp('participant', h.participant.id, track.participant);
  cmp('codec', h.codec.mimeType, track.codec.mimeType);
  cmp('clockRate', h.codec.clockRate, track.codec.clockRate);
  if (mismatches.length) problems.push({ file: name, code: 'HEADER_MISMATCH', message: mismatches.join('; ') });

  // Counts only mean something if the whole file was readable; a stop is reported once, above.
  if (!checkTail(name, parsed, seg.truncated, problems)) return;
  let rtp = 0;
  let rtcp = 0;
  for (const r of parsed.records) {
    if (r.type === RecordType.RTP) rtp++;
    else rtcp++;
  }
  checked.rtpPackets += rtp;
  checked.rtcpPackets += rtcp;
  if (rtp !== seg.rtpPackets || rtcp !== seg.rtcpPackets) {
    problems.push({ file: name, code: 'COUNT_MISMATCH', message: `${rtp} RTP / ${rtcp} RTCP records in file, manifest says ${seg.rtpPackets} / ${seg.rtcpPackets}` });
  }
  // A truncated segment's arrival bounds may include packets that were staged but never written.
  if (!seg.truncated) {
    const first = parsed.records[0]?.arrivalUs ?? null;
    const last = parsed.records.at(-1)?.arrivalUs ?? null;
    if (first !== seg.firstArrivalUs || last !== seg.lastArrivalUs) {
      problems.push({ file: name, code: 'ARRIVAL_MISMATCH', message: `arrivals ${first}..${last} µs in file, manifest says ${seg.firstArrivalUs}..${seg.lastArrivalUs}` });
    }
  }
}
