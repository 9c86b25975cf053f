import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsync, fsyncSync, ftruncateSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { TrackHeader } from '../../lib/contracts/recording.ts';
import { RECORD_OVERHEAD, RecordType, encodeFileHeader, writeRecord } from '../../lib/recording/vrtp-format.ts';
import { PART_SUFFIX, SEGMENT_EXTENSION } from '../../lib/recording/session-dir.ts';

export interface SegmentSummary {
  file: string;
  bytes: number;
  sha256: string;
  rtpPackets: number;
  rtcpPackets: number;
  firstArrivalUs: number | null;
  lastArrivalUs: number | null;
  truncated: boolean;
  truncatedReason?: string;
}

export interface SegmentWriterOptions {
  /** fsync period: at most this much is lost on power failure or kill -9. */
  fsyncIntervalMs: number;
  /** Records are staged in memory and written when the buffer fills or on flush(). */
  bufferBytes?: number;
  onError?: (err: NodeJS.ErrnoException) => void;
}

/**
 * Appends framed RTP/RTCP records to `<name>.vrtp.part` and renames it to
 * `<name>.vrtp` when sealed. Records are staged in one buffer and written with a
 * single write() per flush, so the hot path is a memcpy plus a CRC. A write that fails
 * (ENOSPC, EIO) closes the segment cleanly at its last complete record and marks it
 * truncated; later appends are dropped and counted by the caller.
 */
export class SegmentWriter {
  readonly partPath: string;
  readonly finalPath: string;
  private fd: number;
  private buf: Buffer;
  private used = 0;
  private written = 0;
  private readonly hash: Hash = createHash('sha256');
  private timer: NodeJS.Timeout | undefined;
  private syncing = false;
  private dirty = false;
  private sealed: SegmentSummary | undefined;
  failed: NodeJS.ErrnoException | undefined;
  /** Records that reached the file (staged ones count once written). */
  rtpPackets = 0;
  rtcpPackets = 0;
  private stagedRtp = 0;
  private stagedRtcp = 0;
  /** Records lost because the segment failed while they were staged. */
  lostPackets = 0;
  firstArrivalUs: number | null = null;
  lastArrivalUs: number | null = null;

  constructor(dir: string, name: string, header: TrackHeader, private readonly opts: SegmentWriterOptions) {
    mkdirSync(dir, { recursive: true });
    this.finalPath = path.join(dir, `${name}${SEGMENT_EXTENSION}`);
    this.partPath = `${this.finalPath}${PART_SUFFIX}`;
    this.buf = Buffer.allocUnsafe(opts.bufferBytes ?? 256 * 1024);
    this.fd = openSync(this.partPath, 'wx');
    const head = encodeFileHeader(header);
    this.writeOut(head, head.length);
    // The header must be durable before any packet: a crash leaves a readable file.
    fsyncSync(this.fd);
    fsyncDir(dir);
    // Staged records go to the kernel every 200 ms (a process crash loses at most that),
    // and are fsynced every fsyncIntervalMs (a power cut loses at most that).
    const flushMs = Math.min(200, opts.fsyncIntervalMs);
    let ticks = 0;
    const syncEvery = Math.max(1, Math.round(opts.fsyncIntervalMs / flushMs));
    this.timer = setInterval(() => {
      if (++ticks % syncEvery === 0) this.periodicSync();
      else this.flush();
    }, flushMs);
    this.timer.unref();
  }

  /** Any record appended, written or still staged. */
  get hasRecords(): boolean {
    return this.firstArrivalUs !== null;
  }

  get isOpen(): boolean {
    return this.sealed === undefined && this.failed === undefined;
  }

  /** Hot path. Returns false when the segment can no longer take packets. */
  append(type: RecordType, arrivalUs: number, data: Buffer, start = 0, end = data.length): boolean {
    if (!this.isOpen) return false;
    const need = RECORD_OVERHEAD + (end - start);
    if (this.used + need > this.buf.length) {
      this.flush();
      if (!this.isOpen) return false;
      if (need > this.buf.length) this.buf = Buffer.allocUnsafe(need * 2);
    }
    this.used = writeRecord(this.buf, this.used, type, arrivalUs, data, start, end);
    if (type === RecordType.RTP) this.stagedRtp++;
    else this.stagedRtcp++;
    if (this.firstArrivalUs === null) this.firstArrivalUs = arrivalUs;
    this.lastArrivalUs = arrivalUs;
    return true;
  }

  /** Hands staged records to the kernel (page cache). Durable after the next fsync. */
  flush(): void {
    if (this.used === 0 || !this.isOpen) return;
    const n = this.used;
    this.used = 0;
    if (this.writeOut(this.buf, n)) {
      this.rtpPackets += this.stagedRtp;
      this.rtcpPackets += this.stagedRtcp;
    } else {
      this.lostPackets += this.stagedRtp + this.stagedRtcp;
    }
    this.stagedRtp = 0;
    this.stagedRtcp = 0;
  }

  private writeOut(buf: Buffer, n: number): boolean {
    let off = 0;
    try {
      while (off < n) off += writeSync(this.fd, buf, off, n - off);
      this.hash.update(buf.subarray(0, n));
      this.written += n;
      this.dirty = true;
      return true;
    } catch (err) {
      this.fail(err as NodeJS.ErrnoException);
      return false;
    }
  }

  private periodicSync(): void {
    this.flush();
    if (!this.dirty || this.syncing || !this.isOpen) return;
    this.syncing = true;
    this.dirty = false;
    // fsync off the event loop (libuv thread pool): the hot path never waits for the disk.
    fsync(this.fd, (err) => {
      this.syncing = false;
      if (err) this.fail(err);
    });
  }

  /** Write failure: cut the file back to its last complete record and seal it as truncated. */
  private fail(err: NodeJS.ErrnoException): void {
    if (this.failed) return;
    this.failed = err;
    this.used = 0;
    try {
      ftruncateSync(this.fd, this.written);
      fsyncSync(this.fd);
    } catch {
      // best effort: the reader's CRC check still stops at the last complete record
    }
    this.opts.onError?.(err);
    this.sealInternal(true, err.code ?? err.message);
  }

  /** Flushes, fsyncs, closes and renames .part to its final name. Idempotent. */
  seal(): SegmentSummary {
    if (this.sealed) return this.sealed;
    this.flush();
    if (this.sealed) return this.sealed;
    return this.sealInternal(false);
  }

  private sealInternal(truncated: boolean, reason?: string): SegmentSummary {
    if (this.sealed) return this.sealed;
    clearInterval(this.timer);
    try {
      fsyncSync(this.fd);
    } catch {
      // already failed
    }
    closeSync(this.fd);
    renameSync(this.partPath, this.finalPath);
    fsyncDir(path.dirname(this.finalPath));
    this.sealed = {
      file: path.basename(this.finalPath),
      bytes: this.written,
      sha256: this.hash.digest('hex'),
      rtpPackets: this.rtpPackets,
      rtcpPackets: this.rtcpPackets,
      firstArrivalUs: this.firstArrivalUs,
      lastArrivalUs: this.lastArrivalUs,
      truncated,
      ...(reason ? { truncatedReason: reason } : {}),
    };
    return this.sealed;
  }
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // some filesystems refuse directory fsync; the rename is still atomic
  }
}
