import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { VerbatimError } from '../errors.ts';

export interface StoredArtifact {
  key: string;
  bytes: number;
  sha256: string;
  /** The data key the stored object is encrypted with (encrypted-storage.ts); absent: stored as given. */
  keyId?: string;
}

/** Whose data key encrypts an upload (encrypted-storage.ts); storages without encryption ignore it. */
export interface PutOptions {
  encryptFor?: { session: string; participant: string | null };
}

/** Where artifacts go. Keys are relative, slash-separated, validated: no traversal. */
export interface ArtifactStorage {
  readonly name: string;
  /** Stores the file under the key; bytes and sha256 are the file's (the plaintext, when the storage encrypts). */
  put(key: string, file: string, contentType: string, opts?: PutOptions): Promise<StoredArtifact>;
  /** Absolute local path or presigned URL to read the artifact. */
  locate(key: string): Promise<string>;
  exists(key: string): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** The artifact's bytes as a stream; rejects with BAD_REQUEST when no artifact is stored under the key. */
  getStream(key: string): Promise<Readable>;
  /**
   * Bytes `start` through `end` (inclusive, as in HTTP Range) as a stream; an `end` past the last byte
   * reads to the end. Rejects with BAD_REQUEST when no artifact is stored under the key or the bounds are
   * not integers with 0 <= start <= end, and with RANGE_NOT_SATISFIABLE (details.size) when `start` is
   * at or past the end of the artifact.
   */
  getRange(key: string, start: number, end: number): Promise<Readable>;
  /** The stored artifact's size, or undefined when no artifact is stored under the key. */
  stat(key: string): Promise<{ bytes: number } | undefined>;
  /** Keys stored under a folder prefix (`a/b/`), sorted; nested folders included. */
  list(prefix: string): Promise<string[]>;
}

/** The error `getStream` rejects with for a key that holds no artifact (errors.ts has no generic not-found code). */
export function artifactNotFound(key: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', `no artifact stored under "${key}"`, { hint: 'Check the key; exists() tells whether an artifact is stored.' });
}

/** Checks getRange's bounds before any I/O. */
export function validateRange(start: number, end: number): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new VerbatimError('BAD_REQUEST', `invalid byte range ${start}-${end}`, { hint: 'Ask for integer bounds with 0 <= start <= end.' });
  }
}

/** The error `getRange` rejects with for a start at or past the end of the artifact. */
export function rangeNotSatisfiable(key: string, start: number, size: number): VerbatimError {
  return new VerbatimError('RANGE_NOT_SATISFIABLE', `byte ${start} is past the end of "${key}" (${size} bytes)`, { hint: 'Ask for bytes within the artifact (stat() gives its size).', details: { size } });
}

const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]*(\/[A-Za-z0-9][A-Za-z0-9._@-]*)*$/;

export function validateKey(key: string): string {
  if (!KEY_RE.test(key) || key.split('/').some((p) => p === '..' || p === '.')) {
    throw new VerbatimError('BAD_REQUEST', `invalid storage key "${key}"`, { hint: 'Keys are relative paths of [A-Za-z0-9._@-] segments.' });
  }
  return key;
}

export async function sha256File(file: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file)) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), bytes };
}

/** The embedded default: a directory on local disk. */
export class LocalArtifactStorage implements ArtifactStorage {
  readonly name = 'local';
  constructor(private readonly root: string) {}

  private pathOf(key: string): string {
    return path.join(this.root, validateKey(key));
  }

  async put(key: string, file: string): Promise<StoredArtifact> {
    const dest = this.pathOf(key);
    await mkdir(path.dirname(dest), { recursive: true });
    const tmp = `${dest}.tmp`;
    await copyFile(file, tmp);
    await rename(tmp, dest);
    const { sha256, bytes } = await sha256File(dest);
    return { key, bytes, sha256 };
  }

  async locate(key: string): Promise<string> {
    return this.pathOf(key);
  }

  async exists(key: string): Promise<boolean> {
    return stat(this.pathOf(key)).then(
      (st) => st.isFile(),
      () => false,
    );
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  async getStream(key: string): Promise<Readable> {
    const { handle } = await this.openFile(key);
    return handle.createReadStream();
  }

  async getRange(key: string, start: number, end: number): Promise<Readable> {
    const file = this.pathOf(key);
    validateRange(start, end);
    const { handle, size } = await this.openFile(key, file);
    if (start >= size) {
      await handle.close();
      throw rangeNotSatisfiable(key, start, size);
    }
    return handle.createReadStream({ start, end: Math.min(end, size - 1) });
  }

  async stat(key: string): Promise<{ bytes: number } | undefined> {
    return stat(this.pathOf(key)).then(
      (st) => (st.isFile() ? { bytes: st.size } : undefined),
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
        throw err;
      },
    );
  }

  async list(prefix: string): Promise<string[]> {
    const dir = path.join(this.root, validateKey(prefix.replace(/\/+$/, '')));
    const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [];
      throw err;
    });
    // Half-written uploads (put's temporary names) are not artifacts.
    return entries
      .filter((e) => e.isFile() && !e.name.endsWith('.tmp'))
      .map((e) => path.relative(this.root, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
      .sort();
  }

  /** Opens the artifact's file, so a missing artifact rejects here instead of erroring a stream later. */
  private async openFile(key: string, file = this.pathOf(key)): Promise<{ handle: FileHandle; size: number }> {
    const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw artifactNotFound(key);
      throw err;
    });
    const st = await handle.stat();
    if (!st.isFile()) {
      // A key that is only a prefix of other keys (a directory here) holds no artifact, as in S3.
      await handle.close();
      throw artifactNotFound(key);
    }
    return { handle, size: st.size };
  }
}
