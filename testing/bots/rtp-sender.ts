import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { oggPackets } from '../../services/lib/media/ogg-packets.ts';
import { buildRtp } from '../../services/lib/rtp/rtp-packet.ts';

/**
 * Real Opus and VP8 for publishing bots: short clips encoded by ffmpeg once per machine (at
 * test time, into the temp dir), split into frames, and sent in a loop as RTP at their own pace.
 */

export interface EncodedClip {
  kind: 'audio' | 'video';
  clockRate: number;
  /** Clock ticks per frame. */
  frameTicks: number;
  frameMs: number;
  frames: Buffer[];
}

const clipDir = path.join(os.tmpdir(), 'verbatim-bot-media-v1');

function encoded(name: string, args: string[]): string {
  mkdirSync(clipDir, { recursive: true });
  const file = path.join(clipDir, name);
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args, '-f', name.endsWith('.ivf') ? 'ivf' : 'ogg', tmp]);
    // Several bot processes may encode at once: the rename makes the clip appear whole.
    renameSync(tmp, file);
  }
  return file;
}

/** IVF: a 32-byte header, then per frame a 12-byte header (size LE32, pts LE64) and the frame. */
function ivfFrames(buf: Buffer): Buffer[] {
  const frames = [];
  for (let off = buf.readUInt16LE(6); off + 12 <= buf.length; ) {
    const size = buf.readUInt32LE(off);
    frames.push(buf.subarray(off + 12, off + 12 + size));
    off += 12 + size;
  }
  return frames;
}


let clips: { audio: EncodedClip; video: EncodedClip } | undefined;

/** 4 s of a 440 Hz tone in 20 ms Opus frames and 4 s of 640x360 VP8 at 30 fps (~500 kbit/s, keyframe every 2 s). */
export function mediaClips(): { audio: EncodedClip; video: EncodedClip } {
  clips ??= {
    audio: {
      kind: 'audio',
      clockRate: 48000,
      frameTicks: 960,
      frameMs: 20,
      frames: oggPackets(readFileSync(encoded('tone.ogg', ['-f', 'lavfi', '-i', 'sine=frequency=440:duration=4', '-c:a', 'libopus', '-b:a', '32k', '-frame_duration', '20', '-ac', '2']))),
    },
    video: {
      kind: 'video',
      clockRate: 90000,
      frameTicks: 3000,
      frameMs: 1000 / 30,
      frames: ivfFrames(
        readFileSync(
          encoded('pattern-360p.ivf', ['-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30:duration=4', '-c:v', 'libvpx', '-b:v', '500k', '-g', '60', '-deadline', 'realtime', '-cpu-used', '8']),
        ),
      ),
    },
  };
  return clips;
}

/** Largest RTP payload per packet (fits a 1200-byte datagram with SRTP's overhead). */
const MAX_PAYLOAD = 1100;


/** RTP packets of one frame: Opus whole (RFC 7587); VP8 split with its payload descriptor, S bit on the first (RFC 7741). */
export function packetize(clip: EncodedClip, frame: Buffer, pt: number, ssrc: number, seq: number, ts: number): Buffer[] {
  if (clip.kind === 'audio') return [buildRtp({ payloadType: pt, seq, timestamp: ts, ssrc }, frame)];
  const out = [];
  for (let off = 0; off < frame.length; off += MAX_PAYLOAD) {
    const last = off + MAX_PAYLOAD >= frame.length;
    out.push(buildRtp({ payloadType: pt, seq: seq + out.length, timestamp: ts, ssrc, marker: last }, Buffer.concat([Buffer.from([off === 0 ? 0x10 : 0x00]), frame.subarray(off, off + MAX_PAYLOAD)])));
  }
  return out;
}

/** Sends a clip as RTP in a loop at its frame rate until stopped; counts what it sent. */
export class RtpSender {
  packets = 0;
  bytes = 0;
  /** Frames skipped because this process fell behind (a sign the bots' core is saturated). */
  skipped = 0;
  /** Packets the WebRTC stack refused to send. */
  sendErrors = 0;
  private seq = Math.floor(Math.random() * 0x8000);
  private ts = Math.floor(Math.random() * 0x7fffffff);
  private index = 0;
  private timer: NodeJS.Timeout | undefined;
  private started = 0;
  stopped = false;

  constructor(
    readonly clip: EncodedClip,
    readonly payloadType: number,
    readonly ssrc: number,
    private readonly send: (packet: Buffer) => void,
  ) {}

  start(): void {
    this.started = Date.now();
    // Frames due by the clock are sent on each tick, so a late timer catches up instead of drifting.
    this.timer = setInterval(() => this.tick(), Math.min(20, this.clip.frameMs));
  }

  private tick(): void {
    const due = Math.floor((Date.now() - this.started) / this.clip.frameMs);
    // A starved process does not send its backlog in one burst (no real encoder would):
    // frames more than ~100 ms late are skipped, their time passes as a gap in timestamps.
    const late = due - this.index - Math.ceil(100 / this.clip.frameMs);
    if (late > 0) {
      this.index += late;
      this.ts += late * this.clip.frameTicks;
      this.skipped += late;
    }
    while (this.index <= due && !this.stopped) {
      const frame = this.clip.frames[this.index % this.clip.frames.length]!;
      for (const p of packetize(this.clip, frame, this.payloadType, this.ssrc, this.seq, this.ts)) {
        this.send(p);
        this.seq++;
        this.packets++;
        this.bytes += p.length;
      }
      this.ts += this.clip.frameTicks;
      this.index++;
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }
}
