import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { buffer } from 'node:stream/consumers';
import { cipherRange, DEFAULT_CHUNK_SIZE, DecryptStream, EncryptStream, MAX_HEADER_BYTES, parseHeader, plaintextSize, type EnvelopeHeader } from '../crypto/envelope.ts';
import type { DataKeys } from '../crypto/data-keys.ts';
import { VerbatimError } from '../errors.ts';
import { rangeNotSatisfiable, validateRange, type ArtifactStorage, type PutOptions, type StoredArtifact } from './artifact-storage.ts';

export interface EncryptedStorageOptions {
  /** ENCRYPTION_AT_REST=on: uploads that name their key scope (PutOptions.encryptFor) are encrypted. */
  encryptWrites: boolean;
  /** Plaintext bytes per chunk (default 64 KiB). */
  chunkSize?: number;
}

type Probe = { clear: true } | { clear: false; header: EnvelopeHeader };

/**
 * Encryption at rest over any ArtifactStorage: uploads that name their key scope are stored as an
 * envelope (crypto/envelope.ts) under that scope's data key; every read looks at the object's first
 * bytes and decrypts envelopes on the fly, so callers see plaintext bytes, sizes and ranges
 * (HTTP Range decrypts only the chunks it covers). Objects stored in clear (before encryption was on,
 * audit checkpoints) read as they are. An object whose data key was destroyed rejects with
 * KEY_DESTROYED: that is crypto-shredding.
 */
export class EncryptedArtifactStorage implements ArtifactStorage {
  readonly name: string;
  private readonly chunkSize: number;

  constructor(
    readonly inner: ArtifactStorage,
    private readonly keys: DataKeys,
    private readonly opts: EncryptedStorageOptions,
  ) {
    this.name = inner.name;
    this.chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  }

  async put(key: string, file: string, contentType: string, opts?: PutOptions): Promise<StoredArtifact> {
    if (!this.opts.encryptWrites || !opts?.encryptFor) return this.inner.put(key, file, contentType, opts);
    const dk = await this.keys.forScope(opts.encryptFor);
    // The envelope is written next to the file (same disk as the work file), stored, then removed.
    const sealed = `${file}.${randomBytes(6).toString('hex')}.venc`;
    const hash = createHash('sha256');
    const enc = new EncryptStream(dk.key, dk.id, this.chunkSize, hash);
    try {
      // 1 MiB reads: fewer, larger steps through the pipeline (the envelope's chunking is independent of them).
      await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), enc, createWriteStream(sealed, { mode: 0o600, highWaterMark: 1 << 20 }));
      await this.inner.put(key, sealed, contentType);
    } finally {
      await rm(sealed, { force: true });
    }
    return { key, bytes: enc.plainBytes, sha256: hash.digest('hex'), keyId: dk.id };
  }

  /** A presigned URL or path would hand out ciphertext: only clear objects can be located. */
  async locate(key: string): Promise<string> {
    if (!(await this.probe(key)).clear) throw new VerbatimError('BAD_REQUEST', `${key} is stored encrypted: it has no directly readable location`, { hint: 'Read it through getStream/getRange (the compliance API media routes).' });
    return this.inner.locate(key);
  }

  exists(key: string): Promise<boolean> {
    return this.inner.exists(key);
  }

  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }

  list(prefix: string): Promise<string[]> {
    return this.inner.list(prefix);
  }

  async getStream(key: string): Promise<Readable> {
    const p = await this.probe(key);
    if (p.clear) return this.inner.getStream(key);
    const dataKey = await this.keys.get(p.header.keyId);
    return pipeThrough(await this.inner.getStream(key), new DecryptStream({ key: () => dataKey }));
  }

  async getRange(key: string, start: number, end: number): Promise<Readable> {
    validateRange(start, end);
    const p = await this.probe(key);
    if (p.clear) return this.inner.getRange(key, start, end);
    const dataKey = await this.keys.get(p.header.keyId);
    const size = await this.plainSize(key, p.header);
    if (start >= size) throw rangeNotSatisfiable(key, start, size);
    const r = cipherRange(p.header, size, start, Math.min(end, size - 1));
    return pipeThrough(
      await this.inner.getRange(key, r.storedStart, r.storedEnd),
      new DecryptStream({ header: p.header, key: () => dataKey, firstChunk: r.firstChunk, finalChunk: r.finalChunk, skip: r.skip, take: r.take }),
    );
  }

  /** The plaintext size (what getRange and getStream serve). */
  async stat(key: string): Promise<{ bytes: number } | undefined> {
    const st = await this.inner.stat(key);
    if (!st || st.bytes === 0) return st;
    const p = await this.probe(key);
    return p.clear ? st : { bytes: plaintextSize(p.header, st.bytes) };
  }

  /** The data key id an object is encrypted with; undefined for a clear or missing object. */
  async keyIdOf(key: string): Promise<string | undefined> {
    if (!(await this.inner.exists(key))) return undefined;
    const p = await this.probe(key);
    return p.clear ? undefined : p.header.keyId;
  }

  // S3 Object Lock passes through (object-lock.ts and the recorder's uploader look for these by shape).
  get objectLockEnabled(): boolean {
    return (this.inner as { objectLockEnabled?: boolean }).objectLockEnabled === true;
  }

  setLegalHold(key: string, on: boolean): Promise<void> {
    return this.lockable('setLegalHold').setLegalHold(key, on);
  }

  applyRetention(key: string): Promise<Date | undefined> {
    return this.lockable('applyRetention').applyRetention(key);
  }

  destroy(): void {
    (this.inner as { destroy?: () => void }).destroy?.();
  }

  private lockable<K extends 'setLegalHold' | 'applyRetention'>(what: K): { setLegalHold(key: string, on: boolean): Promise<void>; applyRetention(key: string): Promise<Date | undefined> } {
    const inner = this.inner as unknown as Partial<Record<K, unknown>>;
    if (typeof inner[what] !== 'function') throw new VerbatimError('INTERNAL', `${this.inner.name} storage has no ${what}`, { hint: 'Object Lock needs STORAGE_BACKEND=s3 with S3_OBJECT_LOCK.' });
    return this.inner as unknown as { setLegalHold(key: string, on: boolean): Promise<void>; applyRetention(key: string): Promise<Date | undefined> };
  }

  /** Reads the object's first bytes: an envelope header, or a clear object. */
  private async probe(key: string): Promise<Probe> {
    let head: Buffer;
    try {
      head = await buffer(await this.inner.getRange(key, 0, MAX_HEADER_BYTES - 1));
    } catch (err) {
      // An empty object has no byte 0: it is clear (an envelope is never empty).
      if (err instanceof VerbatimError && err.code === 'RANGE_NOT_SATISFIABLE') return { clear: true };
      throw err;
    }
    const h = parseHeader(head);
    if (h === undefined) return { clear: true };
    if (h === 'short') throw new VerbatimError('CIPHERTEXT_INVALID', `${key} is truncated inside its encryption header`, { hint: 'The stored object is damaged.' });
    return { clear: false, header: h };
  }

  private async plainSize(key: string, header: EnvelopeHeader): Promise<number> {
    const st = await this.inner.stat(key);
    if (!st) throw new VerbatimError('BAD_REQUEST', `no artifact stored under "${key}"`, { hint: 'Check the key.' });
    return plaintextSize(header, st.bytes);
  }
}

/** source → transform, with the source's errors passed on and the source destroyed with the result. */
function pipeThrough(source: Readable, t: Transform): Readable {
  source.on('error', (err) => t.destroy(err));
  t.on('close', () => source.destroy());
  return source.pipe(t);
}
