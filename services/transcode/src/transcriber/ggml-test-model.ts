import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Whisper models generated at test time in the legacy ggml layout that whisper.cpp's
 * whisper_model_load reads (src/whisper.cpp): magic, 11 int32 hparams, mel filters,
 * vocab, then named tensors. No real model can be downloaded here, so:
 *
 *  - fixedPhraseModelPath(): a tiny (~7 MB) English-only model whose weights are
 *    built by hand so that greedy decoding emits, for every 30 s window,
 *    `<|0.00|> verbatim test phrase <|30.00|> <|endoftext|>`. It exercises the real
 *    whisper-cli end to end (mel, encoder, decoder, timestamps, JSON output).
 *  - randomWeightsModelPath('tiny' | 'base'): real tiny/base dimensions with random
 *    weights, for benchmarking compute cost (the text it produces is meaningless).
 */

export const TEST_PHRASE = 'verbatim test phrase';

const GGML_MAGIC = 0x67676d6c;
const GGML_F32 = 0;
const GGML_F16 = 1;
const GENERATOR_VERSION = 2;

// English-only special-token layout (whisper_vocab defaults for n_vocab 51864).
const N_VOCAB_EN = 51864;
const TOKEN_EOT = 50256;
const TOKEN_SOT = 50257;
const TOKEN_NOT = 50362;
const TOKEN_BEG = 50363; // <|0.00|>; <|k*0.02|> is TOKEN_BEG + k

export interface ModelDims {
  nVocab: number;
  nAudioCtx: number;
  nAudioState: number;
  nAudioHead: number;
  nAudioLayer: number;
  nTextCtx: number;
  nTextState: number;
  nTextHead: number;
  nTextLayer: number;
  nMels: number;
}

// --- float16 ------------------------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half from a number (round to nearest even); Float16Array is not in Node 22. */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

// --- mel filters (librosa.filters.mel(sr=16000, n_fft=400, n_mels, norm='slaney'), as OpenAI's) ---

export function melFilters(nMels: number, nFft = 201, sampleRate = 16000): Float32Array {
  const fSp = 200 / 3;
  const minLogHz = 1000;
  const minLogMel = minLogHz / fSp;
  const logStep = Math.log(6.4) / 27;
  const hzToMel = (f: number) => (f < minLogHz ? f / fSp : minLogMel + Math.log(f / minLogHz) / logStep);
  const melToHz = (m: number) => (m < minLogMel ? m * fSp : minLogHz * Math.exp(logStep * (m - minLogMel)));
  const maxMel = hzToMel(sampleRate / 2);
  const melF = Array.from({ length: nMels + 2 }, (_, i) => melToHz((maxMel * i) / (nMels + 1)));
  const out = new Float32Array(nMels * nFft);
  for (let m = 0; m < nMels; m++) {
    const lo = melF[m]!;
    const mid = melF[m + 1]!;
    const hi = melF[m + 2]!;
    const enorm = 2 / (hi - lo);
    for (let k = 0; k < nFft; k++) {
      const f = (k * sampleRate) / 2 / (nFft - 1);
      const w = Math.max(0, Math.min((f - lo) / (mid - lo), (hi - f) / (hi - mid)));
      out[m * nFft + k] = w * enorm;
    }
  }
  return out;
}

// --- writer ---------------------------------------------------------------------

interface TensorSpec {
  name: string;
  /** ggml order: ne[0] is the fastest-varying dimension. */
  ne: number[];
  type: typeof GGML_F32 | typeof GGML_F16;
}

/** Every tensor whisper_model_load creates, with the type it expects for ftype 1 (f16). */
function tensorSpecs(d: ModelDims): TensorSpec[] {
  const A = d.nAudioState;
  const T = d.nTextState;
  const specs: TensorSpec[] = [
    { name: 'encoder.positional_embedding', ne: [A, d.nAudioCtx], type: GGML_F32 },
    { name: 'encoder.conv1.weight', ne: [3, d.nMels, A], type: GGML_F16 },
    { name: 'encoder.conv1.bias', ne: [1, A], type: GGML_F32 },
    { name: 'encoder.conv2.weight', ne: [3, A, A], type: GGML_F16 },
    { name: 'encoder.conv2.bias', ne: [1, A], type: GGML_F32 },
    { name: 'encoder.ln_post.weight', ne: [A], type: GGML_F32 },
    { name: 'encoder.ln_post.bias', ne: [A], type: GGML_F32 },
  ];
  const block = (prefix: string, n: number, attn: string) => [
    { name: `${prefix}.${attn}_ln.weight`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.${attn}_ln.bias`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.${attn}.query.weight`, ne: [n, n], type: GGML_F16 },
    { name: `${prefix}.${attn}.query.bias`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.${attn}.key.weight`, ne: [n, n], type: GGML_F16 },
    { name: `${prefix}.${attn}.value.weight`, ne: [n, n], type: GGML_F16 },
    { name: `${prefix}.${attn}.value.bias`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.${attn}.out.weight`, ne: [n, n], type: GGML_F16 },
    { name: `${prefix}.${attn}.out.bias`, ne: [n], type: GGML_F32 },
  ] as TensorSpec[];
  const mlp = (prefix: string, n: number) => [
    { name: `${prefix}.mlp_ln.weight`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.mlp_ln.bias`, ne: [n], type: GGML_F32 },
    { name: `${prefix}.mlp.0.weight`, ne: [n, 4 * n], type: GGML_F16 },
    { name: `${prefix}.mlp.0.bias`, ne: [4 * n], type: GGML_F32 },
    { name: `${prefix}.mlp.2.weight`, ne: [4 * n, n], type: GGML_F16 },
    { name: `${prefix}.mlp.2.bias`, ne: [n], type: GGML_F32 },
  ] as TensorSpec[];
  for (let i = 0; i < d.nAudioLayer; i++) specs.push(...block(`encoder.blocks.${i}`, A, 'attn'), ...mlp(`encoder.blocks.${i}`, A));
  specs.push(
    { name: 'decoder.positional_embedding', ne: [T, d.nTextCtx], type: GGML_F32 },
    { name: 'decoder.token_embedding.weight', ne: [T, d.nVocab], type: GGML_F16 },
    { name: 'decoder.ln.weight', ne: [T], type: GGML_F32 },
    { name: 'decoder.ln.bias', ne: [T], type: GGML_F32 },
  );
  for (let i = 0; i < d.nTextLayer; i++) {
    specs.push(...block(`decoder.blocks.${i}`, T, 'attn'), ...block(`decoder.blocks.${i}`, T, 'cross_attn'), ...mlp(`decoder.blocks.${i}`, T));
  }
  return specs;
}

/**
 * Fills one tensor's data. Values are in ggml order (index = i0 + ne0*(i1 + ne1*i2)).
 * Return undefined for all zeros.
 */
type Filler = (spec: TensorSpec, count: number) => Float32Array | Uint16Array | undefined;

function writeModel(dims: ModelDims, vocab: string[], fill: Filler): Buffer {
  const specs = tensorSpecs(dims);
  const filters = melFilters(dims.nMels);
  const vocabBytes = vocab.map((t) => Buffer.from(t, 'utf8'));
  let size = 4 + 11 * 4 + 8 + filters.length * 4 + 4 + vocabBytes.reduce((n, b) => n + 4 + b.length, 0);
  for (const s of specs) size += 12 + 4 * s.ne.length + Buffer.byteLength(s.name) + count(s) * (s.type === GGML_F16 ? 2 : 4);
  const buf = Buffer.alloc(size);
  let p = 0;
  const i32 = (v: number) => {
    buf.writeInt32LE(v, p);
    p += 4;
  };
  buf.writeUInt32LE(GGML_MAGIC, p);
  p += 4;
  for (const v of [dims.nVocab, dims.nAudioCtx, dims.nAudioState, dims.nAudioHead, dims.nAudioLayer, dims.nTextCtx, dims.nTextState, dims.nTextHead, dims.nTextLayer, dims.nMels, 1 /* ftype f16 */]) i32(v);
  i32(dims.nMels);
  i32(filters.length / dims.nMels);
  Buffer.from(filters.buffer, filters.byteOffset, filters.byteLength).copy(buf, p);
  p += filters.byteLength;
  i32(vocabBytes.length);
  for (const b of vocabBytes) {
    i32(b.length);
    b.copy(buf, p);
    p += b.length;
  }
  for (const s of specs) {
    const n = count(s);
    i32(s.ne.length);
    i32(Buffer.byteLength(s.name));
    i32(s.type);
    for (const x of s.ne) i32(x);
    p += buf.write(s.name, p, 'utf8');
    const data = fill(s, n);
    if (data) {
      if (data.length !== n) throw new Error(`${s.name}: ${data.length} values, expected ${n}`);
      if (s.type === GGML_F32 && !(data instanceof Float32Array)) throw new Error(`${s.name}: expected f32 data`);
      if (s.type === GGML_F16 && !(data instanceof Uint16Array)) throw new Error(`${s.name}: expected f16 bits`);
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(buf, p);
    }
    p += n * (s.type === GGML_F16 ? 2 : 4); // Buffer.alloc zero-fills: zeros need no writing
  }
  if (p !== size) throw new Error(`model writer size mismatch: ${p} != ${size}`);
  return buf;
}

function count(s: TensorSpec): number {
  return s.ne.reduce((a, b) => a * b, 1);
}

// --- fixed-phrase model -----------------------------------------------------------

/**
 * All transformer weights are zero, so the residual stream passes through every block
 * unchanged, except decoder block 0's MLP, which is a lookup table "current token ->
 * next token". Each chain token k gets one embedding dimension dim(k) (tied input and
 * output embedding, scale EMB). After ln, a token's embedding is ~sqrt(D-1) on its
 * dimension; one hidden unit per source token fires only there (bias -thr) and writes
 * OUT into dim(next). The final ln + tied output projection then gives the next token
 * a logit of ~60 and everything else <~12 (zero rows: 0), so greedy decoding follows
 * the chain, and the timestamp rules of whisper_process_logits are satisfied:
 *   SOT -> <|0.00|> -> " verbatim" -> " test" -> " phrase" -> <|30.00|> -> EOT.
 * <|30.00|> ends the segment at the end of the window (callers clamp it to the audio).
 */
export function buildFixedPhraseModel(): Buffer {
  const D = 64;
  const dims: ModelDims = { nVocab: N_VOCAB_EN, nAudioCtx: 1500, nAudioState: D, nAudioHead: 2, nAudioLayer: 1, nTextCtx: 448, nTextState: D, nTextHead: 2, nTextLayer: 1, nMels: 80 };
  // Only " " is required (suppress_blank looks it up); ids >= vocab.length get
  // placeholder names from the loader.
  const vocab = [' ', ' verbatim', ' test', ' phrase'];
  const [tVerbatim, tTest, tPhrase] = [1, 2, 3];
  const tsEnd = TOKEN_BEG + 1500;
  // [current, next, strength]: " phrase" prefers <|30.00|> but falls back to EOT where
  // timestamps are masked (-nt), so that mode ends cleanly too.
  const chain: Array<[number, number, number]> = [
    [TOKEN_SOT, TOKEN_BEG, 1],
    [TOKEN_NOT, tVerbatim, 1], // the -nt prompt ends in <|notimestamps|>
    [TOKEN_BEG, tVerbatim, 1],
    [tVerbatim, tTest, 1],
    [tTest, tPhrase, 1],
    [tPhrase, tsEnd, 1],
    [tPhrase, TOKEN_EOT, 0.5],
    [tsEnd, TOKEN_EOT, 1],
    [TOKEN_EOT, TOKEN_EOT, 1],
  ];
  const tokens = [...new Set(chain.flatMap(([a, b]) => [a, b]))];
  const dim = new Map(tokens.map((t, i) => [t, i]));
  const EMB = 8;
  const OUT = 10;
  const thr = Math.sqrt(D - 1) / 2;
  const ones = (n: number) => new Float32Array(n).fill(1);

  return writeModel(dims, vocab, (s, n) => {
    if (s.name.endsWith('ln.weight') || s.name.endsWith('ln_post.weight')) return ones(n);
    if (s.name === 'decoder.token_embedding.weight') {
      const w = new Uint16Array(n);
      for (const [t, i] of dim) w[t * D + i] = toHalf(EMB);
      return w;
    }
    if (s.name === 'decoder.blocks.0.mlp.0.weight') {
      const w = new Uint16Array(n); // ne [D, 4D]: hidden unit u reads row u
      chain.forEach(([src], u) => (w[u * D + dim.get(src)!] = toHalf(1)));
      return w;
    }
    if (s.name === 'decoder.blocks.0.mlp.0.bias') {
      const b = new Float32Array(n);
      chain.forEach((_, u) => (b[u] = -thr));
      return b;
    }
    if (s.name === 'decoder.blocks.0.mlp.2.weight') {
      const w = new Uint16Array(n); // ne [4D, D]: output d reads row d
      chain.forEach(([, next, k], u) => (w[dim.get(next)! * 4 * D + u] = toHalf(OUT * k)));
      return w;
    }
    return undefined;
  });
}

// --- random-weights models ----------------------------------------------------------

export const RANDOM_MODEL_DIMS = {
  // Real Whisper tiny/base shapes (tiny has 6 heads of 64; base 8 heads of 64).
  tiny: { nAudioState: 384, nAudioHead: 6, nAudioLayer: 4 },
  base: { nAudioState: 512, nAudioHead: 8, nAudioLayer: 6 },
} as const;

/** xorshift32: deterministic and fast enough for ~40M weights. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** 4096 N(0, std) samples as f16 bits: sampling a weight is then one table lookup. */
function normalHalfTable(std: number, next: () => number): Uint16Array {
  const table = new Uint16Array(4096);
  for (let i = 0; i < 4096; i += 2) {
    const u1 = (next() + 1) / 4294967297; // (0, 1): log(0) never happens
    const u2 = next() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1)) * std;
    table[i] = toHalf(r * Math.cos(2 * Math.PI * u2));
    table[i + 1] = toHalf(r * Math.sin(2 * Math.PI * u2));
  }
  return table;
}

export function buildRandomWeightsModel(size: keyof typeof RANDOM_MODEL_DIMS, seed = 1, nVocab = N_VOCAB_EN): Buffer {
  const r = RANDOM_MODEL_DIMS[size];
  const dims: ModelDims = { nVocab, nAudioCtx: 1500, nAudioState: r.nAudioState, nAudioHead: r.nAudioHead, nAudioLayer: r.nAudioLayer, nTextCtx: 448, nTextState: r.nAudioState, nTextHead: r.nAudioHead, nTextLayer: r.nAudioLayer, nMels: 80 };
  const next = rng(seed);
  const table = normalHalfTable(0.02, next);
  return writeModel(dims, [' ', ' the', ' and', ' a'], (s, n) => {
    if (s.name.endsWith('ln.weight') || s.name.endsWith('ln_post.weight')) return new Float32Array(n).fill(1);
    if (s.name.endsWith('positional_embedding')) {
      const w = new Float32Array(n);
      for (let i = 0; i < n; i++) w[i] = ((next() & 0xffff) / 0xffff - 0.5) * 0.02;
      return w;
    }
    if (s.type === GGML_F16) {
      const w = new Uint16Array(n);
      for (let i = 0; i < n; i++) w[i] = table[next() & 4095]!;
      return w;
    }
    return undefined; // biases stay zero
  });
}

// --- cache ----------------------------------------------------------------------------

const cacheDir = () => path.join(os.tmpdir(), 'verbatim-models');

function cached(kind: string, params: unknown, build: () => Buffer): string {
  const key = createHash('sha256').update(JSON.stringify({ v: GENERATOR_VERSION, kind, params })).digest('hex').slice(0, 12);
  const file = path.join(cacheDir(), `ggml-${kind}-${key}.bin`);
  if (!existsSync(file)) {
    mkdirSync(cacheDir(), { recursive: true });
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(tmp, build());
    renameSync(tmp, file); // atomic: concurrent test workers never see half a file
  }
  return file;
}

/** Path of the fixed-phrase test model (generated once per machine). */
export function fixedPhraseModelPath(): string {
  return cached('fixed-phrase', {}, buildFixedPhraseModel);
}

/** Path of a random-weights model with real tiny/base dimensions (generated once per machine). */
export function randomWeightsModelPath(size: keyof typeof RANDOM_MODEL_DIMS, opts: { seed?: number; nVocab?: number } = {}): string {
  const seed = opts.seed ?? 1;
  const nVocab = opts.nVocab ?? N_VOCAB_EN;
  return cached(`random-${size}`, { seed, nVocab }, () => buildRandomWeightsModel(size, seed, nVocab));
}
