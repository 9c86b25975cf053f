import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { detectSpeech, detectSpeechInWav, parseWav, wavHeader, type SpeechSpan } from './vad.ts';
import { sox, soxDuration, spokenClip } from '../../../../testing/speech.ts';

const SR = 16000;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-vad-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Deterministic PCM: Gaussian-ish noise at `noiseRms` plus harmonic "voiced" bursts. */
function synth(seconds: number, noiseRms: number, bursts: Array<{ start: number; end: number; rms: number }>): Int16Array {
  const out = new Int16Array(Math.round(seconds * SR));
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  for (let i = 0; i < out.length; i++) {
    const gauss = (rand() + rand() + rand() + rand() - 2) * Math.sqrt(3); // unit variance
    let v = gauss * noiseRms;
    const t = i / SR;
    for (const b of bursts) {
      if (t >= b.start && t < b.end) {
        // 150 Hz fundamental + harmonics, like a voiced vowel; 4 Hz syllable wobble.
        const s = Math.sin(2 * Math.PI * 150 * t) + 0.5 * Math.sin(2 * Math.PI * 300 * t) + 0.25 * Math.sin(2 * Math.PI * 450 * t);
        v += s * b.rms * (0.75 + 0.25 * Math.sin(2 * Math.PI * 4 * t)) * 1.1;
      }
    }
    out[i] = Math.max(-32768, Math.min(32767, Math.round(v)));
  }
  return out;
}

function expectSpans(actual: SpeechSpan[], expected: Array<[number, number]>, tol: number): void {
  expect(actual.map((s) => [s.start, s.end]), JSON.stringify(actual)).toHaveLength(expected.length);
  expected.forEach(([start, end], i) => {
    expect(Math.abs(actual[i]!.start - start), `span ${i} start ${actual[i]!.start} vs ${start}`).toBeLessThanOrEqual(tol);
    expect(Math.abs(actual[i]!.end - end), `span ${i} end ${actual[i]!.end} vs ${end}`).toBeLessThanOrEqual(tol);
  });
}

describe('detectSpeech on synthetic PCM', () => {
  const bursts = [
    { start: 1.0, end: 2.5, rms: 6000 },
    { start: 4.0, end: 4.8, rms: 3000 },
    { start: 6.0, end: 6.1, rms: 8000 }, // a click: shorter than 0.3 s, dropped
    { start: 7.0, end: 7.6, rms: 5000 }, // two bursts 0.3 s apart: one span
    { start: 7.9, end: 8.6, rms: 5000 },
  ];
  const pcm = synth(10, 30, bursts);

  it('finds the bursts within ±0.15 s, drops clicks and bridges short pauses', () => {
    expectSpans(detectSpeech(pcm, { padSec: 0 }), [[1.0, 2.5], [4.0, 4.8], [7.0, 8.6]], 0.15);
  });

  it('pads spans by 0.2 s, clamped to the audio', () => {
    expectSpans(detectSpeech(pcm), [[0.8, 2.7], [3.8, 5.0], [6.8, 8.8]], 0.15);
    const atEdges = synth(3, 30, [{ start: 0, end: 1, rms: 6000 }, { start: 2.5, end: 3, rms: 6000 }]);
    const spans = detectSpeech(atEdges);
    expect(spans[0]!.start).toBe(0);
    expect(spans.at(-1)!.end).toBeLessThanOrEqual(3);
  });

  it('accepts a Buffer (including an odd byte offset) like an Int16Array', () => {
    const bytes = Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    const odd = Buffer.alloc(bytes.length + 1).subarray(1);
    bytes.copy(odd);
    expect(detectSpeech(bytes)).toEqual(detectSpeech(pcm));
    expect(detectSpeech(odd)).toEqual(detectSpeech(pcm));
  });

  it('adapts to the noise floor: loud steady noise is not speech, louder talk over it is', () => {
    // -35 dBFS hiss everywhere: a fixed "-45 dBFS = speech" rule would mark all of it.
    const noisy = synth(12, 580, [{ start: 3, end: 5, rms: 9000 }, { start: 8, end: 9.5, rms: 9000 }]);
    expectSpans(detectSpeech(noisy, { padSec: 0 }), [[3, 5], [8, 9.5]], 0.15);
  });

  it('finds nothing in silence or steady noise', () => {
    expect(detectSpeech(new Int16Array(SR * 5))).toEqual([]);
    expect(detectSpeech(synth(8, 200, []))).toEqual([]);
    expect(detectSpeech(new Int16Array(10))).toEqual([]);
  });
});


describe('detectSpeech on real speech (espeak-ng + sox)', () => {
  it('finds two utterances at their known times within ±0.15 s', async () => {
    const a = path.join(tmp, 'a.wav');
    const b = path.join(tmp, 'b.wav');
    const da = spokenClip('okay this is a test of the meeting recorder', a);
    const db = spokenClip('please remember to send the minutes', b);
    const mix = path.join(tmp, 'speech.wav');
    const noise = path.join(tmp, 'noise.wav');
    // 1.5 s silence, utterance a, 3 s silence, utterance b, 2 s silence; light hiss over all.
    const dry = path.join(tmp, 'dry.wav');
    sox(['|sox -n -r 16000 -c 1 -b 16 -t wav - trim 0 1.5', a, '|sox -n -r 16000 -c 1 -b 16 -t wav - trim 0 3', b, '|sox -n -r 16000 -c 1 -b 16 -t wav - trim 0 2', dry]);
    const total = soxDuration(dry);
    sox(['-n', '-r', '16000', '-c', '1', '-b', '16', noise, 'synth', String(total), 'whitenoise', 'vol', '0.002']);
    sox(['-m', dry, noise, '-b', '16', mix]);

    const startB = 1.5 + da + 3;
    expectSpans(await detectSpeechInWav(mix, { padSec: 0 }), [[1.5, 1.5 + da], [startB, startB + db]], 0.15);
    // The defaults (0.2 s padding) are what the transcriber cuts.
    expectSpans(await detectSpeechInWav(mix), [[1.3, 1.7 + da], [startB - 0.2, startB + db + 0.2]], 0.15);
  });

  it('rejects a WAV that is not 16 kHz mono s16', async () => {
    const f = path.join(tmp, 'stereo.wav');
    sox(['-n', '-r', '44100', '-c', '2', '-b', '16', f, 'synth', '0.5', 'sine', '440']);
    await expect(detectSpeechInWav(f)).rejects.toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('44100 Hz') });
  });
});

describe('parseWav', () => {
  it('walks RIFF chunks instead of assuming a 44-byte header', () => {
    const data = Buffer.from([1, 0, 2, 0, 3, 0]);
    const canonical = Buffer.concat([wavHeader(data.length), data]);
    // Insert an odd-sized LIST chunk (padded to even) between fmt and data.
    const list = Buffer.concat([Buffer.from('LIST'), Buffer.from([3, 0, 0, 0]), Buffer.from('abc'), Buffer.from([0])]);
    const withList = Buffer.concat([canonical.subarray(0, 36), list, canonical.subarray(36)]);
    for (const buf of [canonical, withList]) {
      const wav = parseWav(buf);
      expect(wav).toMatchObject({ sampleRate: 16000, channels: 1, bitsPerSample: 16 });
      expect([...wav.data]).toEqual([...data]);
    }
  });

  it('reads a streamed WAV (data size 0xFFFFFFFF) to the end of the file', () => {
    const data = Buffer.from([1, 0, 2, 0, 3, 0, 4, 0]);
    const buf = Buffer.concat([wavHeader(0), data]);
    buf.writeUInt32LE(0xffffffff, 40);
    expect(parseWav(buf).data.length).toBe(8);
  });

  it('refuses non-WAV and compressed input', () => {
    expect(() => parseWav(Buffer.from('not a wav file at all'))).toThrow(/RIFF/);
    const alaw = Buffer.concat([wavHeader(2), Buffer.from([0, 0])]);
    alaw.writeUInt16LE(6, 20);
    expect(() => parseWav(alaw)).toThrow(/not integer PCM/);
  });

  it('writes a header whisper.cpp and sox accept', () => {
    const f = path.join(tmp, 'own-header.wav');
    const pcm = Buffer.from(synth(1, 1000, []).buffer);
    writeFileSync(f, Buffer.concat([wavHeader(pcm.length), pcm]));
    expect(soxDuration(f)).toBeCloseTo(1, 3);
  });
});
