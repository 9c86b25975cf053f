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

/** 320x240 test pattern with a moving counter, 15 fps, looped by Chromium. */
export function fakeCameraY4m(seconds = 4): string {
  return cached(`camera-${seconds}s.y4m`, (out) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=320x240:rate=15:duration=${seconds}`, '-pix_fmt', 'yuv420p', '-f', 'yuv4mpegpipe', out]);
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
