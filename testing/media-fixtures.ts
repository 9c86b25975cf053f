import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Media fixtures generated at test time (never committed): a y4m camera clip and an
 * espeak-ng speech WAV for Chromium's fake devices. Cached per machine by name.
 */
const dir = path.join(os.tmpdir(), 'verbatim-fixtures');

function cached(name: string, make: (out: string) => void): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp${path.extname(name)}`;
    make(tmp);
    renameSync(tmp, file);
  }
  return file;
}

/** Test pattern with a moving counter (320x240 unless asked), 15 fps, looped by Chromium. */
export function fakeCameraY4m(seconds = 4, size = '320x240'): string {
  const name = size === '320x240' ? `camera-${seconds}s.y4m` : `camera-${size}-${seconds}s.y4m`;
  return cached(name, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${size}:rate=15:duration=${seconds}`, '-pix_fmt', 'yuv420p', '-f', 'yuv4mpegpipe', out]);
  });
}

/** Spoken sentence from espeak-ng (22.05 kHz mono WAV). */
export function speechWav(text = 'Hello from Verbatim. This meeting is recorded for compliance.', name = 'speech'): string {
  return cached(`${name}.wav`, (out) => {
    execFileSync('espeak-ng', ['-w', out, text]);
  });
}

/** A steady sine tone WAV (48 kHz mono) — easy to find in a mix with silencedetect. */
export function toneWav(freq = 1000, seconds = 30): string {
  return cached(`tone-${freq}-${seconds}.wav`, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=${freq}:sample_rate=48000:duration=${seconds}`, '-ac', '1', out]);
  });
}

/** Digital silence WAV (48 kHz mono). */
export function silenceWav(seconds = 30): string {
  return cached(`silence-${seconds}.wav`, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `anullsrc=r=48000:cl=mono`, '-t', String(seconds), out]);
  });
}

export interface ProbeResult {
  format: { duration: string; format_name: string };
  streams: { codec_type: string; codec_name: string; duration?: string; start_time?: string; sample_rate?: string; channels?: number; width?: number; height?: number }[];
}

export function ffprobe(file: string): ProbeResult {
  return JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_format', '-show_streams', '-of', 'json', file], { encoding: 'utf8' })) as ProbeResult;
}

/** Times (s) where audio rises out of silence, by ffmpeg's silencedetect. */
export function audioOnsets(file: string, noiseDb = -40, minSilence = 0.3): number[] {
  const r = spawnSync('ffmpeg', ['-v', 'info', '-nostats', '-i', file, '-af', `silencedetect=n=${noiseDb}dB:d=${minSilence}`, '-f', 'null', '-'], { encoding: 'utf8' });
  return [...r.stderr.matchAll(/silence_end: ([0-9.]+)/g)].map((m) => Number(m[1]));
}

/**
 * A/V sync clip: black video with a white flash for the first 100 ms of every second,
 * and a 1 kHz beep for the first 100 ms of every second (as separate y4m + wav for
 * Chromium's fake devices, which loop them).
 */
export function syncClip(seconds = 10): { video: string; audio: string } {
  const video = cached(`sync-${seconds}s.y4m`, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `color=c=black:s=320x240:r=30:d=${seconds}`, '-vf', "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.1)'", '-pix_fmt', 'yuv420p', '-f', 'yuv4mpegpipe', out]);
  });
  const audio = cached(`sync-${seconds}s.wav`, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `sine=frequency=1000:sample_rate=48000:duration=${seconds}`, '-af', "volume=enable='gte(mod(t,1),0.1)':volume=0", '-ac', '1', out]);
  });
  return { video, audio };
}

/** Presentation times (s) where the picture turns bright (flash onsets). */
export function flashOnsets(file: string): number[] {
  const r = spawnSync('ffmpeg', ['-v', 'info', '-nostats', '-i', file, '-an', '-vf', 'signalstats,metadata=print:key=lavfi.signalstats.YAVG', '-f', 'null', '-'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const out: number[] = [];
  let t = 0;
  let bright = false;
  for (const line of r.stderr.split('\n')) {
    const pts = /pts_time:([0-9.]+)/.exec(line);
    if (pts) t = Number(pts[1]);
    const y = /YAVG=([0-9.]+)/.exec(line);
    if (y) {
      const now = Number(y[1]) > 128;
      if (now && !bright) out.push(t);
      bright = now;
    }
  }
  return out;
}

/** Each beep paired with its nearest flash (within 0.5 s): the flash time and beep − flash, seconds. */
export function avPairs(flashes: number[], beeps: number[]): { flash: number; offset: number }[] {
  const out: { flash: number; offset: number }[] = [];
  for (const b of beeps) {
    let best: number | undefined;
    for (const f of flashes) if (best === undefined || Math.abs(b - f) < Math.abs(b - best)) best = f;
    if (best !== undefined && Math.abs(b - best) < 0.5) out.push({ flash: best, offset: b - best });
  }
  return out;
}

/** Median of (beep onset − nearest preceding-or-following flash onset), seconds. */
export function avOffset(flashes: number[], beeps: number[]): { offset: number; pairs: number } {
  const d = avPairs(flashes, beeps)
    .map((p) => p.offset)
    .sort((a, b) => a - b);
  return { offset: d.length ? d[Math.floor(d.length / 2)]! : Number.NaN, pairs: d.length };
}

/**
 * Sync error of an output against a reference, flash by flash: pairs whose flashes are
 * the same moment (within 0.5 s once each file's time 0 is put on a shared clock, e.g.
 * the wall clock) and, for each, output offset − reference offset. Comparing whole-file
 * medians instead is wrong for Chromium's fake devices: their audio and video clocks
 * drift apart (~2.7 ms/s) and at 15 fps the frame that first shows a flash jumps by a
 * frame period, so files covering different spans have different medians even when
 * every shared flash is in sync.
 */
export function syncError(
  reference: { flash: number; offset: number }[],
  referenceStart: number,
  output: { flash: number; offset: number }[],
  outputStart: number,
): { diffs: number[]; median: number } {
  const diffs: number[] = [];
  for (const r of reference) {
    const at = referenceStart + r.flash;
    let best: { flash: number; offset: number } | undefined;
    for (const o of output) if (!best || Math.abs(outputStart + o.flash - at) < Math.abs(outputStart + best.flash - at)) best = o;
    if (best && Math.abs(outputStart + best.flash - at) < 0.5) diffs.push(best.offset - r.offset);
  }
  const sorted = [...diffs].sort((a, b) => a - b);
  return { diffs, median: sorted.length ? sorted[Math.floor(sorted.length / 2)]! : Number.NaN };
}
