import dgram from 'node:dgram';
import type { StartTrackRequest } from '../../lib/contracts/recorder-control.ts';
import type { SegmentEntry, TrackHeader } from '../../lib/contracts/recording.ts';
import { RECORDING_FORMAT_VERSION } from '../../lib/contracts/recording.ts';
import { Verdict, classifyRtcpPort, classifyRtpPort, type DropReason } from './packet-classifier.ts';
import { RecordType } from '../../lib/recording/vrtp-format.ts';
import { segmentName } from '../../lib/recording/session-dir.ts';
import { RTP_HEADER_BYTES, peekPayloadType, peekSsrc } from '../../lib/rtp/index.ts';
import type { SrtpReceiver } from '../../lib/rtp/srtp.ts';
import { SegmentWriter } from './segment-writer.ts';

export interface TrackRecorderOptions {
  dir: string;
  segment: number;
  maxPacketBytes: number;
  fsyncIntervalMs: number;
  /** Open segments are sealed and a new one started after this long (RECORDER_SEGMENT_SECONDS). */
  segmentSeconds: number;
  onDrop: (reason: DropReason) => void;
  /** A segment was sealed (SSRC change, write failure, stop). */
  onSealed: (entry: SegmentEntry, trackOpen: boolean) => void;
  /** The tap sends SRTP: packets are decrypted before they are stored; those that fail authentication are dropped. */
  srtp?: SrtpReceiver;
}

/** Wall clock in µs; performance.now() is monotonic and cheap, anchored once to the epoch. */
const epochAnchorUs = Math.round(performance.timeOrigin * 1000);
export const nowUs = (): number => epochAnchorUs + Math.round(performance.now() * 1000);

/** Consecutive packets of a new SSRC (with this track's payload type) that start a new segment. */
const SSRC_SWITCH_PACKETS = 5;

/**
 * Receives one track on its own RTP and RTCP ports and appends every valid datagram,
 * as it arrived (duplicates and reordering included), to the current segment.
 * Separate ports per track (rather than SSRC demux on shared ports) let the kernel do
 * the demux, keep one sender's junk from touching another track, and make a track's
 * stop a plain socket close; 1000 tracks cost 2000 sockets, well within fd limits.
 */
export class TrackRecorder {
  private writer: SegmentWriter;
  private ssrc: number;
  private segment: number;
  private segmentStartedAt: Date;
  private segmentStartedUs: number;
  private source: { address: string; rtpPort: number } | undefined;
  private candidate: { ssrc: number; packets: { at: number; data: Buffer }[] } | undefined;
  private stopped = false;
  private readonly rotationTimer: NodeJS.Timeout;
  stored = 0;
  received = 0;
  readonly dropped: Partial<Record<DropReason, number>> = {};

  constructor(
    readonly req: StartTrackRequest,
    private readonly rtp: dgram.Socket,
    private readonly rtcp: dgram.Socket,
    private readonly opts: TrackRecorderOptions,
  ) {
    this.ssrc = req.ssrc;
    this.segment = opts.segment;
    this.segmentStartedAt = new Date();
    this.segmentStartedUs = nowUs();
    this.writer = this.openSegment();
    this.rtp.on('message', (msg, rinfo) => this.onRtp(msg, rinfo));
    this.rtcp.on('message', (msg, rinfo) => this.onRtcp(msg, rinfo));
    this.rtp.on('error', () => {});
    this.rtcp.on('error', () => {});
    this.rotationTimer = setInterval(() => this.rotateIfDue(), 1000);
    this.rotationTimer.unref();
  }

  /** Time-based rotation; a segment with no packets yet stays open (silence makes no empty files). */
  private rotateIfDue(): void {
    if (this.stopped || !this.writer.isOpen) return;
    if (nowUs() - this.segmentStartedUs < this.opts.segmentSeconds * 1_000_000 || !this.writer.hasRecords) return;
    this.rotate(this.ssrc, 'rotation');
  }

  get name(): string {
    return segmentName(this.req.track, this.segment);
  }

  private openSegment(): SegmentWriter {
    const header: TrackHeader = {
      format: 'verbatim-rtp',
      version: RECORDING_FORMAT_VERSION,
      room: this.req.room,
      session: this.req.session,
      track: this.req.track,
      segment: this.segment,
      participant: this.req.participant,
      kind: this.req.kind,
      codec: this.req.codec,
      ssrc: this.ssrc,
      headerExtensions: this.req.headerExtensions,
      startedAt: this.segmentStartedAt.toISOString(),
      startedAtUs: this.segmentStartedUs,
      consent: this.req.consent,
    };
    return new SegmentWriter(this.opts.dir, this.name, header, { fsyncIntervalMs: this.opts.fsyncIntervalMs });
  }

  private drop(reason: DropReason): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + 1;
    this.opts.onDrop(reason);
  }

  private sourceOk(address: string, port: number, isRtp: boolean): boolean {
    // The first valid packet pins the sender; datagrams from anyone else are refused.
    if (!this.source) return true;
    return this.source.address === address && (!isRtp || this.source.rtpPort === port);
  }

  private onRtp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.received++;
    const v = classifyRtpPort(msg, this.opts.maxPacketBytes, this.ssrc, this.req.codec.payloadType);
    if (v === Verdict.RTP || v === Verdict.RTCP) {
      if (!this.sourceOk(rinfo.address, rinfo.port, true)) return this.drop('wrong_source');
      // Only an authenticated packet pins the sender.
      const clear = this.unprotect(msg, v === Verdict.RTCP);
      if (!clear) return this.drop('srtp_failed');
      this.source ??= { address: rinfo.address, rtpPort: rinfo.port };
      if (v === Verdict.RTP) this.candidate = undefined;
      return this.store(v === Verdict.RTP ? RecordType.RTP : RecordType.RTCP, clear);
    }
    if (v === 'unknown_ssrc' && msg.length >= RTP_HEADER_BYTES && peekPayloadType(msg) === this.req.codec.payloadType && this.sourceOk(rinfo.address, rinfo.port, true)) {
      const clear = this.unprotect(msg, false);
      return clear ? this.ssrcProbation(clear) : this.drop('srtp_failed');
    }
    this.drop(v);
  }

  /** A new SSRC with our payload type from our sender: after a few packets it becomes a new segment. */
  private ssrcProbation(msg: Buffer): void {
    const ssrc = peekSsrc(msg);
    if (!this.candidate || this.candidate.ssrc !== ssrc) {
      for (const _ of this.candidate?.packets ?? []) this.drop('unknown_ssrc');
      this.candidate = { ssrc, packets: [] };
    }
    this.candidate.packets.push({ at: nowUs(), data: Buffer.from(msg) });
    if (this.candidate.packets.length < SSRC_SWITCH_PACKETS) return;
    const { packets } = this.candidate;
    this.candidate = undefined;
    this.rotate(ssrc, 'ssrc-change');
    for (const p of packets) this.storeAt(RecordType.RTP, p.at, p.data);
  }

  private onRtcp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.received++;
    const v = classifyRtcpPort(msg, this.opts.maxPacketBytes, this.ssrc);
    if (v !== Verdict.RTCP) return this.drop(v);
    if (!this.sourceOk(rinfo.address, rinfo.port, false)) return this.drop('wrong_source');
    const clear = this.unprotect(msg, true);
    if (!clear) return this.drop('srtp_failed');
    this.store(RecordType.RTCP, clear);
  }

  private unprotect(msg: Buffer, rtcp: boolean): Buffer | null {
    const srtp = this.opts.srtp;
    if (!srtp) return msg;
    return rtcp ? srtp.unprotectRtcp(msg) : srtp.unprotectRtp(msg);
  }

  private store(type: RecordType, msg: Buffer): void {
    this.storeAt(type, nowUs(), msg);
  }

  private storeAt(type: RecordType, at: number, msg: Buffer): void {
    if (this.writer.append(type, at, msg)) {
      this.stored++;
      return;
    }
    this.drop('segment_closed');
    if (this.writer.failed && !this.stopped) {
      // Write failure (ENOSPC...): the writer sealed itself as truncated; report once.
      this.stopped = true;
      clearInterval(this.rotationTimer);
      this.opts.onSealed(this.entry('write-failed'), false);
      this.closeSockets();
    }
  }

  private entry(endReason: string): SegmentEntry {
    const s = this.writer.seal();
    return {
      segment: this.segment,
      file: s.file,
      ssrc: this.ssrc,
      startedAt: this.segmentStartedAt.toISOString(),
      startedAtUs: this.segmentStartedUs,
      endedAt: new Date().toISOString(),
      endReason,
      bytes: s.bytes,
      sha256: s.sha256,
      rtpPackets: s.rtpPackets,
      rtcpPackets: s.rtcpPackets,
      firstArrivalUs: s.firstArrivalUs,
      lastArrivalUs: s.lastArrivalUs,
      truncated: s.truncated,
      ...(s.truncatedReason ? { truncatedReason: s.truncatedReason } : {}),
    };
  }

  private rotate(ssrc: number, reason: string): void {
    this.opts.onSealed(this.entry(reason), true);
    this.segment++;
    this.ssrc = ssrc;
    this.segmentStartedAt = new Date();
    this.segmentStartedUs = nowUs();
    this.writer = this.openSegment();
  }

  get nextSegment(): number {
    return this.segment + 1;
  }

  flush(): void {
    this.writer.flush();
  }

  /** Seals the current segment and releases the ports. Idempotent. */
  stop(reason: string): SegmentEntry | undefined {
    if (this.stopped) return undefined;
    this.stopped = true;
    clearInterval(this.rotationTimer);
    this.closeSockets();
    for (const _ of this.candidate?.packets ?? []) this.drop('unknown_ssrc');
    this.candidate = undefined;
    return this.entry(reason);
  }

  private closeSockets(): void {
    for (const s of [this.rtp, this.rtcp]) {
      try {
        s.close();
      } catch {
        // not bound or already closed
      }
    }
  }
}

/**
 * Binds an RTP/RTCP socket pair on the first free even/odd port pair in [min, max]
 * not in `taken`. Ports already used by another process are skipped.
 */
export async function bindPortPair(ip: string, min: number, max: number, taken: Set<number>): Promise<{ rtp: dgram.Socket; rtcp: dgram.Socket; rtpPort: number; rtcpPort: number }> {
  for (let port = min + (min % 2); port + 1 <= max; port += 2) {
    if (taken.has(port)) continue;
    const rtp = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    const rtcp = dgram.createSocket({ type: 'udp4', recvBufferSize: 1024 * 1024 });
    try {
      await bindSocket(rtp, ip, port);
      await bindSocket(rtcp, ip, port + 1);
      taken.add(port);
      return { rtp, rtcp, rtpPort: port, rtcpPort: port + 1 };
    } catch (err) {
      for (const s of [rtp, rtcp]) {
        try {
          s.close();
        } catch {
          // never bound
        }
      }
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  throw Object.assign(new Error(`no free UDP port pair in ${min}-${max}`), { code: 'NO_PORTS' });
}

function bindSocket(s: dgram.Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    s.once('error', onError);
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', onError);
      resolve();
    });
  });
}
