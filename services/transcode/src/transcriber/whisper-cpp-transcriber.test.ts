import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../lib/config.ts';
import { VerbatimError } from '../../../lib/errors.ts';
import { readToolchain } from '../../../lib/toolchain.ts';
import { fixedPhraseModelPath, randomWeightsModelPath, TEST_PHRASE, toHalf } from './ggml-test-model.ts';
import type { TranscriptSegment } from './transcriber.ts';
import { parseWhisperJson, transcribeWithoutVad, whisperCppOptionsFromConfig, WhisperCppTranscriber, wordsOf, type WhisperCppOptions } from './whisper-cpp-transcriber.ts';
import { clearModelVerificationCache, KNOWN_MODEL_SHA1, resolveWhisperModel } from './whisper-models.ts';
import { sox, soxDuration, spokenClip } from '../../../../testing/speech.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-whisper-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
beforeEach(() => clearModelVerificationCache());

/** The cached offline build (instant after `npm run setup`; builds it otherwise). */
function whisperCli(): string {
  const known = process.env.WHISPER_CLI_BIN ?? readToolchain().whisperCliBin;
  if (known) return known;
  const out = execFileSync('bash', ['scripts/build-whisper.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').at(-1)!;
}

/** The real whisper-cli behind a wrapper that appends a line to `log` per run. */
function countingCli(log: string): string {
  const file = `${log}.sh`;
  writeFileSync(file, `#!/bin/sh\necho run >> '${log}'\nexec '${cliBin}' "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

let cliBin: string;
let modelPath: string;
let wavPath: string;
let spans: Array<[number, number]>; // where the speech is in the file
let base: WhisperCppOptions;

beforeAll(() => {
  cliBin = whisperCli();
  modelPath = fixedPhraseModelPath();
  // Speech at 2.0 s and 12.0 s (~2.5 s each) in 17 s of light hiss, 16 kHz mono.
  const a = path.join(tmp, 'a.wav');
  const b = path.join(tmp, 'b.wav');
  const da = spokenClip('okay this is a test of the recorder', a);
  const db = spokenClip('please remember to send the minutes today', b);
  const silence = (s: number) => `|sox -n -r 16000 -c 1 -b 16 -t wav - trim 0 ${s}`;
  const dry = path.join(tmp, 'dry.wav');
  sox([silence(2), a, silence(10 - da), b, silence(5 - db), dry]);
  const noise = path.join(tmp, 'noise.wav');
  sox(['-n', '-r', '16000', '-c', '1', '-b', '16', noise, 'synth', String(soxDuration(dry)), 'whitenoise', 'vol', '0.002']);
  wavPath = path.join(tmp, 'participant.wav');
  sox(['-m', dry, noise, '-b', '16', wavPath]);
  spans = [[2, 2 + da], [12, 12 + db]];
  base = { cliBin, model: modelPath, modelsDir: tmp, threads: 2, beamSize: 1, noFallback: true };
}, 600_000);

/** VAD pads spans by 0.2 s; allow that plus frame-level slack. */
const TOL = 0.35;
function expectInside(seg: TranscriptSegment, [from, to]: [number, number]): void {
  expect(seg.start, JSON.stringify(seg)).toBeGreaterThanOrEqual(from - TOL);
  expect(seg.start, JSON.stringify(seg)).toBeLessThanOrEqual(from + TOL);
  expect(seg.end, JSON.stringify(seg)).toBeLessThanOrEqual(to + TOL);
  expect(seg.end, JSON.stringify(seg)).toBeGreaterThanOrEqual(to - TOL);
}

describe('WhisperCppTranscriber (real whisper-cli, generated ggml model)', () => {
  it('VAD -> spans packed into one window -> one whisper-cli run -> a segment on the session timeline', async () => {
    const before = sha256(wavPath);
    const scratch = path.join(tmp, 'scratch-ok');
    mkdirSync(scratch);
    const runs = path.join(tmp, 'runs-ok.log');
    const t = new WhisperCppTranscriber({ ...base, cliBin: countingCli(runs), tmpDir: scratch });
    const segs = await t.transcribe({ wavPath, language: 'en', offsetSeconds: 10 });

    // Both utterances fit in one 30 s window: the model says its phrase once for it, and
    // the segment maps back from the first utterance's start to the second one's end.
    expect(segs.map((s) => s.text)).toEqual([TEST_PHRASE]);
    expectInside(segs[0]!, [spans[0]![0] + 10, spans[1]![1] + 10]);
    expect(readFileSync(runs, 'utf8').trim().split('\n')).toHaveLength(1);
    // Word timing from the full JSON (-ojf): the phrase's words, in order, inside their segment, on the session timeline.
    const words = segs[0]!.words!;
    expect(words.map((w) => w.text).join(' ')).toBe(TEST_PHRASE);
    for (const [i, w] of words.entries()) {
      expect(w.start).toBeGreaterThanOrEqual(segs[0]!.start);
      expect(w.end).toBeLessThanOrEqual(segs[0]!.end);
      expect(w.end).toBeGreaterThanOrEqual(w.start);
      if (i > 0) expect(w.start).toBeGreaterThanOrEqual(words[i - 1]!.start);
    }
    // Never modified in place; no scratch files left behind.
    expect(sha256(wavPath)).toBe(before);
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('WHISPER_BEAM_SIZE and WHISPER_SHORT_AUDIO_CTX reach whisper-cli (greedy, clip-sized encoder context)', async () => {
    const argsLog = path.join(tmp, 'args.log');
    const shim = path.join(tmp, 'args-cli.sh');
    writeFileSync(shim, `#!/bin/sh\necho "$@" >> '${argsLog}'\nexec '${cliBin}' "$@"\n`);
    chmodSync(shim, 0o755);
    const config = loadConfig({ env: {}, overrides: { DATA_DIR: tmp, WHISPER_CLI_BIN: shim, WHISPER_MODEL: modelPath, WHISPER_BEAM_SIZE: 1, WHISPER_SHORT_AUDIO_CTX: true } });
    const segs = await new WhisperCppTranscriber(whisperCppOptionsFromConfig(config)).transcribe({ wavPath, language: 'en', offsetSeconds: 0 });
    expect(segs.length).toBeGreaterThan(0);
    const args = readFileSync(argsLog, 'utf8').trim().split(' ');
    expect(args[args.indexOf('-bs') + 1]).toBe('1');
    // The packed clip is a few seconds: the encoder context is sized to it (50 frames per second), not 1500.
    const ctx = Number(args[args.indexOf('-ac') + 1]);
    expect(args).toContain('-ac');
    expect(ctx).toBeGreaterThan(0);
    expect(ctx).toBeLessThan(1500);
    // Defaults: whisper-cli's beam search, full 30 s windows.
    const defaults = whisperCppOptionsFromConfig(loadConfig({ env: {}, overrides: { DATA_DIR: tmp, WHISPER_CLI_BIN: shim } }));
    expect(defaults).toMatchObject({ beamSize: 5, shortAudioCtx: false });
  });

  it('offsetSeconds defaults to 0', async () => {
    const segs = await new WhisperCppTranscriber(base).transcribe({ wavPath, language: 'en' });
    expect(segs).toHaveLength(1);
    expectInside(segs[0]!, [spans[0]![0], spans[1]![1]]);
  });

  it('speech over several windows: still one run, every window lands at its speech on the timeline', async () => {
    // A short utterance at 1 s, 28.5 s of continuous talk at 6 s, a short one at 40 s.
    // Packed: A fills window 1 (B does not fit after it), B window 2, C window 3.
    const a = path.join(tmp, 'w-a.wav');
    const one = path.join(tmp, 'w-one.wav');
    const c = path.join(tmp, 'w-c.wav');
    const da = spokenClip('okay this is a test of the recorder', a);
    const d1 = spokenClip('please remember to send the minutes today', one);
    const dc = spokenClip('thank you all for coming', c);
    const b = path.join(tmp, 'w-b.wav');
    sox([one, b, 'repeat', String(Math.ceil(28.5 / d1)), 'trim', '0', '28.5']);
    const silence = (s: number) => `|sox -n -r 16000 -c 1 -b 16 -t wav - trim 0 ${s}`;
    const dry = path.join(tmp, 'w-dry.wav');
    sox([silence(1), a, silence(5 - da), b, silence(40 - 6 - 28.5), c, silence(3), dry]);
    const noise = path.join(tmp, 'w-noise.wav');
    sox(['-n', '-r', '16000', '-c', '1', '-b', '16', noise, 'synth', String(soxDuration(dry)), 'whitenoise', 'vol', '0.002']);
    const long = path.join(tmp, 'w-long.wav');
    sox(['-m', dry, noise, '-b', '16', long]);

    const runs = path.join(tmp, 'runs-long.log');
    const segs = await new WhisperCppTranscriber({ ...base, cliBin: countingCli(runs) }).transcribe({ wavPath: long, language: 'en', offsetSeconds: 100 });
    expect(segs.map((s) => s.text)).toEqual([TEST_PHRASE, TEST_PHRASE, TEST_PHRASE]);
    expectInside(segs[0]!, [101, 101 + da]);
    expectInside(segs[1]!, [106, 106 + 28.5]);
    expectInside(segs[2]!, [140, 140 + dc]);
    expect(readFileSync(runs, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('transcribeWithoutVad runs the whole file once (clamped to its length)', async () => {
    const segs = await transcribeWithoutVad(base, { wavPath, language: 'en', offsetSeconds: 10 });
    expect(segs).toMatchObject([{ start: 10, end: 10 + soxDuration(wavPath), text: TEST_PHRASE }]);
    // Words shifted with their segment and kept inside it.
    expect(segs[0]!.words!.map((w) => w.text)).toEqual(TEST_PHRASE.split(' '));
    for (const w of segs[0]!.words!) expect(w.start >= segs[0]!.start && w.end <= segs[0]!.end && w.end >= w.start, JSON.stringify(w)).toBe(true);
  });

  it('silence gives no segments and never starts whisper-cli', async () => {
    const quiet = path.join(tmp, 'quiet.wav');
    sox(['-n', '-r', '16000', '-c', '1', '-b', '16', quiet, 'trim', '0', '5']);
    const t = new WhisperCppTranscriber({ ...base, cliBin: '/nonexistent/whisper-cli' });
    await expect(t.transcribe({ wavPath: quiet, language: 'en' })).resolves.toEqual([]);
  });

  it('abort kills the child and rejects with AbortError', async () => {
    const scratch = path.join(tmp, 'scratch-abort');
    mkdirSync(scratch);
    const ac = new AbortController();
    const t = new WhisperCppTranscriber({ ...base, tmpDir: scratch });
    const started = Date.now();
    const p = t.transcribe({ wavPath, language: 'en' }, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(readdirSync(scratch)).toEqual([]);
    const pre = new AbortController();
    pre.abort();
    await expect(t.transcribe({ wavPath, language: 'en' }, { signal: pre.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('a timeout kills the child: TRANSCRIBE_FAILED', async () => {
    const t = new WhisperCppTranscriber({ ...base, timeoutMs: 1 });
    await expect(t.transcribe({ wavPath, language: 'en' })).rejects.toMatchObject({ code: 'TRANSCRIBE_FAILED', message: expect.stringContaining('timed out') });
  });

  it('whisper-cli failing (model truncated after a valid magic) is TRANSCRIBE_FAILED with its stderr', async () => {
    const broken = path.join(tmp, 'truncated.bin');
    writeFileSync(broken, readFileSync(modelPath).subarray(0, 1 << 20));
    const err = await new WhisperCppTranscriber({ ...base, model: broken }).transcribe({ wavPath, language: 'en' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VerbatimError);
    expect(err).toMatchObject({ code: 'TRANSCRIBE_FAILED' });
    expect((err as VerbatimError).details).toMatchObject({ stderrTail: expect.stringMatching(/failed to (initialize|load)|whisper_model_load/) });
  });

  it('a missing binary is TRANSCRIBE_FAILED naming the fix', async () => {
    const t = new WhisperCppTranscriber({ ...base, cliBin: path.join(tmp, 'no-such-whisper-cli') });
    await expect(t.transcribe({ wavPath, language: 'en' })).rejects.toMatchObject({ code: 'TRANSCRIBE_FAILED', hint: expect.stringContaining('npm run setup') });
  });
});

describe('whisper model resolution', () => {
  it('a missing known model is MODEL_MISSING with the exact download and air-gapped fix', async () => {
    const dir = path.join(tmp, 'models-empty');
    const t = new WhisperCppTranscriber({ ...base, model: 'base.en', modelsDir: dir });
    const err = (await t.transcribe({ wavPath, language: 'en' }).catch((e: unknown) => e)) as VerbatimError;
    expect(err).toBeInstanceOf(VerbatimError);
    expect(err.code).toBe('MODEL_MISSING');
    expect(err.status).toBe(424);
    const file = path.join(dir, 'ggml-base.en.bin');
    expect(err.hint).toContain(`curl -L -o ${file} https://huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-base.en.bin`);
    expect(err.hint).toContain(`echo '137c40403d78fd54d454da0f9bd998f78703390c  ${file}' | sha1sum -c -`);
    expect(err.hint).toMatch(/Air-gapped: copy ggml-base\.en\.bin .* into .*WHISPER_MODELS_DIR.* or set WHISPER_MODEL to the path/);
  });

  it('a missing explicit path is MODEL_MISSING', async () => {
    await expect(resolveWhisperModel({ model: path.join(tmp, 'nope.bin'), modelsDir: tmp })).rejects.toMatchObject({ code: 'MODEL_MISSING' });
  });

  it('a known-name model with the wrong checksum is MODEL_INVALID (even with a valid ggml magic)', async () => {
    const dir = path.join(tmp, 'models-corrupt');
    mkdirSync(dir, { recursive: true });
    copyFileSync(modelPath, path.join(dir, 'ggml-tiny.en.bin'));
    const t = new WhisperCppTranscriber({ ...base, model: 'tiny.en', modelsDir: dir });
    const err = (await t.transcribe({ wavPath, language: 'en' }).catch((e: unknown) => e)) as VerbatimError;
    expect(err.code).toBe('MODEL_INVALID');
    expect(err.message).toContain(KNOWN_MODEL_SHA1['tiny.en']);
    expect(err.hint).toContain('huggingface.co/ggerganov/whisper.cpp/resolve/main/ggml-tiny.en.bin');
  });

  it('an explicit path is trusted without checksum but must be a ggml file', async () => {
    await expect(resolveWhisperModel({ model: modelPath, modelsDir: tmp })).resolves.toEqual({ path: modelPath, check: 'magic' });
    const gguf = path.join(tmp, 'model.gguf.bin');
    writeFileSync(gguf, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(64)]));
    await expect(resolveWhisperModel({ model: gguf, modelsDir: tmp })).rejects.toMatchObject({ code: 'MODEL_INVALID', message: expect.stringContaining('bad magic') });
  });

  it('a known name resolves into WHISPER_MODELS_DIR and passes when the SHA-1 matches', async () => {
    // No official model offline: check the verification path against a file whose
    // published hash we can know, by temporarily registering it.
    const dir = path.join(tmp, 'models-ok');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'ggml-tiny.bin');
    copyFileSync(modelPath, file);
    const sha1 = createHash('sha1').update(readFileSync(file)).digest('hex');
    const table = KNOWN_MODEL_SHA1 as Record<string, string>;
    const original = table.tiny!;
    table.tiny = sha1;
    try {
      await expect(resolveWhisperModel({ model: 'tiny', modelsDir: dir })).resolves.toEqual({ path: file, name: 'tiny', check: 'sha1' });
    } finally {
      table.tiny = original;
    }
  });
});

describe('generated ggml models', () => {
  it('f16 conversion rounds like IEEE half', () => {
    expect([1, -2, 0.5, 65504, 1e-8, 1 / 3, 100000].map(toHalf)).toEqual([0x3c00, 0xc000, 0x3800, 0x7bff, 0x0000, 0x3555, 0x7c00]);
    expect(toHalf(2 ** -24)).toBe(0x0001); // smallest subnormal
  });

  it('the random-weights tiny model has real tiny.en shapes and whisper-cli loads it', () => {
    const file = randomWeightsModelPath('tiny');
    expect(readFileSync(file).subarray(0, 48)).toEqual(
      Buffer.from(Int32Array.from([0x67676d6c, 51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1]).buffer),
    );
    // A 50 ms clip: whisper-cli loads the model (fails loudly on any tensor mismatch),
    // then skips inference as too short.
    const clip = path.join(tmp, 'blip.wav');
    sox(['-n', '-r', '16000', '-c', '1', '-b', '16', clip, 'synth', '0.05', 'sine', '300']);
    const res = spawnSync(cliBin, ['-m', file, '-f', clip, '-l', 'en'], { encoding: 'utf8' });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/model size\s*=\s*7\d\.\d+ MB/);
  });
});

describe('parseWhisperJson', () => {
  it('shifts nothing, trims text, drops empty and past-the-end segments, clamps ends, survives raw control characters', () => {
    const raw = `{"transcription":[
      {"offsets":{"from":0,"to":1500},"text":"  hello\tthere "},
      {"offsets":{"from":1500,"to":2000},"text":"   "},
      {"offsets":{"from":2000,"to":30000},"text":" tail"},
      {"offsets":{"from":9000,"to":9500},"text":" ghost"}]}`;
    expect(parseWhisperJson(raw, 4)).toEqual([
      { start: 0, end: 1.5, text: 'hello there' },
      { start: 2, end: 4, text: 'tail' },
    ]);
    expect(() => parseWhisperJson('{"nope":1}', 4)).toThrow(/transcription/);
  });
});

describe('wordsOf (whisper-cli -ojf tokens)', () => {
  it('joins sub-word tokens, drops special tokens, clamps into the segment', () => {
    const tok = (text: string, from: number, to: number) => ({ text, offsets: { from, to }, id: 1, p: 0.9 });
    const words = wordsOf([tok('[_BEG_]', 0, 0), tok(' four', 1000, 1300), tok(' one', 1300, 1500), tok(' 41', 1600, 1700), tok('11', 1700, 1900), tok(',', 1900, 1900), tok(' done', 2000, 2600), tok('[_TT_130]', 2600, 2600), tok('<|endoftext|>', 2600, 2600)], 1.1, 2.5);
    expect(words).toEqual([
      { text: 'four', start: 1.1, end: 1.3 },
      { text: 'one', start: 1.3, end: 1.5 },
      { text: '4111,', start: 1.6, end: 1.9 },
      { text: 'done', start: 2, end: 2.5 },
    ]);
  });
});
