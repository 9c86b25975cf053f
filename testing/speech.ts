import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';

/** Test fixtures for real speech: espeak-ng speaks, sox converts and measures. */
export function sox(args: string[]): void {
  execFileSync('sox', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function soxDuration(file: string): number {
  return Number(execFileSync('soxi', ['-D', file], { encoding: 'utf8' }).trim());
}

/** espeak-ng utterance as 16 kHz mono s16 with leading/trailing silence trimmed; returns its seconds. */
export function spokenClip(text: string, out: string): number {
  const raw = `${out}.raw.wav`;
  execFileSync('espeak-ng', ['-w', raw, text]);
  sox([raw, '-r', '16000', '-c', '1', '-b', '16', out, 'silence', '1', '0.01', '0.1%', 'reverse', 'silence', '1', '0.01', '0.1%', 'reverse']);
  rmSync(raw);
  return soxDuration(out);
}
