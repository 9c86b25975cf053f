import { execFileSync } from 'node:child_process';
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
