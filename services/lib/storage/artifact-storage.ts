import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { VerbatimError } from '../errors.ts';

export interface StoredArtifact {
  key: string;
  bytes: number;
  sha256: string;
}

/** Where artifacts go. Keys are relative, slash-separated, validated: no traversal. */
export interface ArtifactStorage {
  readonly name: string;
  put(key: string, file: string, contentType: string): Promise<StoredArtifact>;
  /** Absolute local path or presigned URL to read the artifact. */
  locate(key: string): Promise<string>;
  exists(key: string): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** The artifact's bytes as a stream; rejects with BAD_REQUEST when no artifact is stored under the key. */
  getStream(key: string): Promise<Readable>;
}

/** The error `getStream` rejects with for a key that holds no artifact (errors.ts has no generic not-found code). */
export function artifactNotFound(key: string): VerbatimError {
  return new VerbatimError('BAD_REQUEST', `no artifact stored under "${key}"`, { hint: 'Check the key; exists() tells whether an artifact is stored.' });
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
    const file = this.pathOf(key);
    // Open first so a missing artifact rejects here instead of erroring the stream later.
    const handle = await open(file, 'r').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw artifactNotFound(key);
      throw err;
    });
    if (!(await handle.stat()).isFile()) {
      // A key that is only a prefix of other keys (a directory here) holds no artifact, as in S3.
      await handle.close();
      throw artifactNotFound(key);
    }
    return handle.createReadStream();
  }
}
