import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { VerbatimError } from '../../../lib/errors.ts';

/**
 * WHISPER_MODEL resolution: a known model name is looked up as
 * `<WHISPER_MODELS_DIR>/ggml-<name>.bin` and verified against the SHA-1 that
 * whisper.cpp publishes for it (models/README.md, "Available models"; the copy shipped
 * in node_modules/nodejs-whisper/cpp/whisper.cpp/models/README.md matches upstream
 * ggerganov/whisper.cpp). Anything path-like is an operator's own file: trusted, but
 * its ggml magic is checked so a wrong file fails here rather than inside whisper-cli.
 */

/** SHA-1 of the official ggml conversions on huggingface.co/ggerganov/whisper.cpp. */
export const KNOWN_MODEL_SHA1: Readonly<Record<string, string>> = {
  tiny: 'bd577a113a864445d4c299885e0cb97d4ba92b5f',
  'tiny.en': 'c78c86eb1a8faa21b369bcd33207cc90d64ae9df',
  base: '465707469ff3a37a2b9b8d8f89f2f99de7299dac',
  'base.en': '137c40403d78fd54d454da0f9bd998f78703390c',
  small: '55356645c2b361a969dfd0ef2c5a50d530afd8d5',
  'small.en': 'db8a495a91d927739e50b3fc1cc4c6b8f6c2d022',
  'small.en-tdrz': 'b6c6e7e89af1a35c08e6de56b66ca6a02a2fdfa1',
  medium: 'fd9727b6e1217c2f614f9b698455c4ffd82463b4',
  'medium.en': '8c30f0e44ce9560643ebd10bbe50cd20eafd3723',
  'large-v1': 'b1caaf735c4cc1429223d5a74f0f4d0b9b59a299',
  'large-v2': '0f4c8e34f21cf1a914c59d8b3ce882345ad349d6',
  'large-v2-q5_0': '00e39f2196344e901b3a2bd5814807a769bd1630',
  'large-v3': 'ad82bf6a9043ceed055076d0fd39f5f186ff8062',
  'large-v3-q5_0': 'e6e2ed78495d403bef4b7cff42ef4aaadcfea8de',
  'large-v3-turbo': '4af2b29d7ec73d781377bfd1758ca957a807e941',
  'large-v3-turbo-q5_0': 'e050f7970618a659205450ad97eb95a18d69c9ee',
};

/**
 * Names download-ggml-model.sh offers but for which whisper.cpp publishes no checksum:
 * resolved like known names, checked by magic only.
 */
export const NAMED_MODELS_WITHOUT_SHA1: readonly string[] = [
  'tiny-q5_1', 'tiny.en-q5_1', 'tiny-q8_0', 'base-q5_1', 'base.en-q5_1', 'base-q8_0',
  'small-q5_1', 'small.en-q5_1', 'small-q8_0', 'medium-q5_0', 'medium.en-q5_0', 'medium-q8_0',
  'large-v2-q8_0', 'large-v3-turbo-q8_0',
];

const GGML_MAGIC = 0x67676d6c; // "lmgg" on disk (little-endian uint32)
const DOWNLOAD_BASE = 'https://huggingface.co/ggerganov/whisper.cpp/resolve/main';

export interface ResolvedModel {
  path: string;
  /** The known name, when WHISPER_MODEL was one. */
  name?: string;
  /** How the file was checked: published SHA-1, or ggml magic only (own files, unlisted names). */
  check: 'sha1' | 'magic';
}

export interface ModelSettings {
  /** WHISPER_MODEL: a name or a path. */
  model: string;
  /** WHISPER_MODELS_DIR. */
  modelsDir: string;
}

function isPathLike(value: string): boolean {
  return value.includes('/') || value.includes('\\') || value.endsWith('.bin');
}

/** Where WHISPER_MODEL points, without touching the disk. */
export function modelLocation(s: ModelSettings): { path: string; name?: string; sha1?: string } {
  if (isPathLike(s.model)) return { path: path.resolve(s.model) };
  const file = path.join(path.resolve(s.modelsDir), `ggml-${s.model}.bin`);
  const sha1 = KNOWN_MODEL_SHA1[s.model];
  return sha1 ? { path: file, name: s.model, sha1 } : { path: file, name: s.model };
}

function missingHint(name: string, dir: string, sha1: string | undefined): string {
  const file = path.join(dir, `ggml-${name}.bin`);
  const check = sha1 ? ` && echo '${sha1}  ${file}' | sha1sum -c -` : '';
  return [
    `With internet: mkdir -p ${dir} && curl -L -o ${file} ${DOWNLOAD_BASE}/ggml-${name}.bin${check}`,
    `Air-gapped: copy ggml-${name}.bin${sha1 ? ` (SHA-1 ${sha1})` : ''} onto this host into ${dir} (WHISPER_MODELS_DIR), or set WHISPER_MODEL to the path of a ggml .bin file.`,
  ].join('\n');
}

async function readMagic(file: string): Promise<number | undefined> {
  const fh = await open(file, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 ? b.readUInt32LE(0) : undefined;
  } finally {
    await fh.close();
  }
}

export async function sha1File(file: string): Promise<string> {
  const hash = createHash('sha1');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

// Hashing a 3 GB model takes seconds: verify once per (path, size, mtime) per process,
// and let concurrent jobs share one verification.
const verified = new Map<string, Promise<void>>();

/** Drops remembered verifications (tests). */
export function clearModelVerificationCache(): void {
  verified.clear();
}

/**
 * Resolves WHISPER_MODEL to a file that exists and is a ggml Whisper model.
 * Throws MODEL_MISSING (with the exact fix) or MODEL_INVALID.
 */
export async function resolveWhisperModel(s: ModelSettings): Promise<ResolvedModel> {
  const loc = modelLocation(s);
  const dir = path.resolve(s.modelsDir);
  const st = await stat(loc.path).catch(() => undefined);
  if (!st || !st.isFile()) {
    if (loc.name === undefined) {
      throw new VerbatimError('MODEL_MISSING', `Whisper model file ${loc.path} (WHISPER_MODEL) does not exist`, {
        hint: `Copy the ggml .bin model to ${loc.path}, or set WHISPER_MODEL to a known name (${Object.keys(KNOWN_MODEL_SHA1).join(', ')}) stored in WHISPER_MODELS_DIR (${dir}).`,
      });
    }
    const unknown = !loc.sha1 && !NAMED_MODELS_WITHOUT_SHA1.includes(loc.name);
    throw new VerbatimError('MODEL_MISSING', `Whisper model '${loc.name}' is not installed: ${loc.path} does not exist`, {
      hint: (unknown ? `'${loc.name}' is not a known whisper.cpp model name (known: ${Object.keys(KNOWN_MODEL_SHA1).join(', ')}).\n` : '') + missingHint(loc.name, dir, loc.sha1),
      details: { model: loc.name, path: loc.path },
    });
  }

  const key = `${loc.path}\0${st.size}\0${st.mtimeMs}`;
  let pending = verified.get(key);
  if (!pending) {
    pending = verify(loc, dir);
    verified.set(key, pending);
    pending.catch(() => verified.delete(key)); // a failure is re-checked next time (file may be replaced)
  }
  await pending;
  return { path: loc.path, ...(loc.name !== undefined ? { name: loc.name } : {}), check: loc.sha1 ? 'sha1' : 'magic' };
}

async function verify(loc: { path: string; name?: string; sha1?: string }, dir: string): Promise<void> {
  const magic = await readMagic(loc.path);
  if (magic !== GGML_MAGIC) {
    throw new VerbatimError('MODEL_INVALID', `${loc.path} is not a ggml Whisper model (bad magic)`, {
      hint: loc.name
        ? `Replace it with the official file. ${missingHint(loc.name, dir, loc.sha1)}`
        : 'WHISPER_MODEL must point at a whisper.cpp ggml .bin model (not GGUF, PyTorch or safetensors). Convert with whisper.cpp models/convert-pt-to-ggml.py or use an official ggml model.',
      details: { path: loc.path },
    });
  }
  if (loc.sha1) {
    const actual = await sha1File(loc.path);
    if (actual !== loc.sha1) {
      throw new VerbatimError('MODEL_INVALID', `${loc.path} failed its checksum: SHA-1 ${actual}, expected ${loc.sha1} for '${loc.name}'`, {
        hint: `The file is corrupt or a different model. Delete it and fetch it again. ${missingHint(loc.name!, dir, loc.sha1)}`,
        details: { path: loc.path, expected: loc.sha1, actual },
      });
    }
  }
}
