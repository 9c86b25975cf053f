import { createReadStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectLegalHoldCommand,
  GetObjectRetentionCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  PutObjectLegalHoldCommand,
  PutObjectRetentionCommand,
  S3Client,
  S3ServiceException,
  type PutObjectCommandInput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { VerbatimError } from '../errors.ts';
import { artifactNotFound, rangeNotSatisfiable, sha256File, validateKey, validateRange, type ArtifactStorage, type StoredArtifact } from './artifact-storage.ts';

/** Object metadata key the artifact's SHA-256 (hex) is recorded under: the `x-amz-meta-sha256` header. */
export const SHA256_METADATA_KEY = 'sha256';

export interface S3ObjectLockOptions {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  /** Retention end for this key (e.g. from the retention policy of its session); undefined leaves the object without a retention period. */
  retainUntil: (key: string) => Date | undefined | Promise<Date | undefined>;
}

export interface S3ArtifactStorageOptions {
  bucket: string;
  region: string;
  /** Custom endpoint (MinIO, Ceph, ...). Unset: AWS. */
  endpoint?: string;
  /** Static credentials. Unset: the AWS SDK's default provider chain (env, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  forcePathStyle?: boolean;
  /** Use this client instead of building one (its config then wins over the fields above). */
  client?: S3Client;
  /** Multipart part size in bytes (default 8 MiB, minimum 5 MiB). Files no larger than one part go up in a single PUT. */
  partSize?: number;
  /** Parts uploaded concurrently (default 2). */
  queueSize?: number;
  /** Lifetime of the presigned URLs `locate` returns, seconds (default 3600). */
  presignExpiresSeconds?: number;
  /**
   * Ask the server to verify a SHA-256 of every request body (x-amz-checksum-sha256; for multipart uploads a
   * per-part checksum, so S3's resulting object checksum is a composite, not the file's SHA-256). Default off
   * for compatibility with older S3-compatible servers; always on when `objectLock` is set, because S3 refuses
   * Object Lock uploads without a Content-MD5 or x-amz-checksum-* header.
   */
  serverChecksums?: boolean;
  /**
   * S3 Object Lock: every upload carries ObjectLockMode + ObjectLockRetainUntilDate. The bucket must have been
   * created with Object Lock enabled (hence versioned). Tested against Ceph radosgw (worm.test.ts).
   */
  objectLock?: S3ObjectLockOptions;
}

const MiB = 1024 * 1024;

/**
 * Artifacts in an S3 bucket. `put` computes the file's SHA-256 locally first (it must be known before the
 * upload starts, since it is sent as `x-amz-meta-sha256` with the PUT / CreateMultipartUpload), uploads with
 * lib-storage (multipart above one part), then HEADs the object and fails unless its length and recorded
 * SHA-256 match. That check proves the server kept the whole object under our metadata; it does not re-read
 * the bytes — content integrity in transit rests on TCP/TLS and, with `serverChecksums`, on the server.
 */
export class S3ArtifactStorage implements ArtifactStorage {
  readonly name = 's3';
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly presignExpiresSeconds: number;
  private readonly serverChecksums: boolean;
  private readonly objectLock: S3ObjectLockOptions | undefined;

  constructor(opts: S3ArtifactStorageOptions) {
    this.bucket = opts.bucket;
    this.partSize = opts.partSize ?? 8 * MiB;
    this.queueSize = opts.queueSize ?? 2;
    this.presignExpiresSeconds = opts.presignExpiresSeconds ?? 3600;
    this.objectLock = opts.objectLock;
    this.serverChecksums = opts.serverChecksums === true || opts.objectLock !== undefined;
    if (opts.client) {
      this.client = opts.client;
    } else {
      const cfg: S3ClientConfig = {
        region: opts.region,
        forcePathStyle: opts.forcePathStyle ?? false,
        // Since SDK 3.729 the default (WHEN_SUPPORTED) adds CRC32 checksums to every upload, which many
        // S3-compatible servers reject or mishandle. Against a custom endpoint only send checksums when an
        // operation requires them (or `serverChecksums` asks for SHA-256); against AWS keep the SDK default.
        ...(opts.endpoint
          ? { endpoint: opts.endpoint, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }
          : {}),
        ...(opts.credentials ? { credentials: opts.credentials } : {}),
      };
      this.client = new S3Client(cfg);
    }
  }

  async put(key: string, file: string, contentType: string): Promise<StoredArtifact> {
    validateKey(key);
    const { sha256, bytes } = await sha256File(file);
    const retainUntil = await this.objectLock?.retainUntil(key);
    const params: PutObjectCommandInput = {
      Bucket: this.bucket,
      Key: key,
      Body: createReadStream(file),
      ContentLength: bytes,
      ContentType: contentType,
      Metadata: { [SHA256_METADATA_KEY]: sha256 },
      ...(this.serverChecksums ? { ChecksumAlgorithm: 'SHA256' as const } : {}),
      ...(this.objectLock && retainUntil ? { ObjectLockMode: this.objectLock.mode, ObjectLockRetainUntilDate: retainUntil } : {}),
    };
    try {
      await new Upload({ client: this.client, params, partSize: this.partSize, queueSize: this.queueSize }).done();
    } catch (err) {
      throw storageError(`uploading ${key} to s3://${this.bucket} failed`, err);
    }
    const head = await this.head(key);
    if (!head) throw storageError(`s3://${this.bucket}/${key} is missing right after its upload`);
    const storedSha = head.Metadata?.[SHA256_METADATA_KEY];
    if (head.ContentLength !== bytes || storedSha !== sha256) {
      throw storageError(
        `s3://${this.bucket}/${key} does not match what was uploaded: ${head.ContentLength ?? '?'} bytes, sha256 ${storedSha ?? 'missing'}; expected ${bytes} bytes, sha256 ${sha256}`,
      );
    }
    return { key, bytes, sha256 };
  }

  /** A presigned GET URL (valid presignExpiresSeconds), playable by a browser that can reach the endpoint. */
  async locate(key: string): Promise<string> {
    validateKey(key);
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), { expiresIn: this.presignExpiresSeconds });
  }

  async exists(key: string): Promise<boolean> {
    validateKey(key);
    return (await this.head(key)) !== undefined;
  }

  /**
   * Without Object Lock: one DeleteObject. With it the bucket is versioned, where a plain delete
   * only stacks a delete marker on top of versions that stay readable; so every version of the
   * key is deleted by id, and a version the lock protects fails the call with OBJECT_RETAINED,
   * naming its retention date or legal hold (never a silent "deleted").
   */
  async delete(key: string): Promise<void> {
    validateKey(key);
    if (!this.objectLock) {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
      } catch (err) {
        throw storageError(`deleting s3://${this.bucket}/${key} failed`, err);
      }
      return;
    }
    const retained: string[] = [];
    for (const versionId of await this.versionsOf(key)) {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }));
      } catch (err) {
        if (!(err instanceof S3ServiceException && err.$metadata.httpStatusCode === 403)) throw storageError(`deleting version ${versionId} of s3://${this.bucket}/${key} failed`, err);
        retained.push(await this.lockOf(key, versionId));
      }
    }
    if (retained.length > 0) {
      throw new VerbatimError('OBJECT_RETAINED', `s3://${this.bucket}/${key} is under S3 Object Lock and cannot be deleted: ${retained.join('; ')}`, {
        hint: 'The bucket keeps it until the retention date passes (COMPLIANCE: no one can shorten it) or the legal hold is released; GDPR erasure of locked media needs crypto-shredding.',
        details: { key, locks: retained },
      });
    }
  }

  async getStream(key: string): Promise<Readable> {
    validateKey(key);
    let body: unknown;
    try {
      body = (await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))).Body;
    } catch (err) {
      if (isNotFound(err)) throw artifactNotFound(key);
      throw storageError(`reading s3://${this.bucket}/${key} failed`, err);
    }
    if (!(body instanceof Readable)) throw storageError(`reading s3://${this.bucket}/${key}: response body is not a Node stream`);
    return body;
  }

  /**
   * GetObject with a Range header. A server that sends more than the range (ignores Range and answers the
   * whole object, or widens it as s3rver does for an end of 0) is trimmed here to exactly the bytes asked for.
   */
  async getRange(key: string, start: number, end: number): Promise<Readable> {
    validateKey(key);
    validateRange(start, end);
    let res;
    try {
      res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: `bytes=${start}-${end}` }));
    } catch (err) {
      if (isNotFound(err)) throw artifactNotFound(key);
      if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 416) {
        const size = (await this.head(key))?.ContentLength;
        if (size === undefined) throw artifactNotFound(key);
        throw rangeNotSatisfiable(key, start, size);
      }
      throw storageError(`reading bytes ${start}-${end} of s3://${this.bucket}/${key} failed`, err);
    }
    const body = res.Body;
    if (!(body instanceof Readable)) throw storageError(`reading s3://${this.bucket}/${key}: response body is not a Node stream`);
    // What the body holds: the Content-Range it answered with, or (200) the whole object.
    const m = res.ContentRange ? /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.ContentRange) : null;
    const sent = m ? { start: Number(m[1]), end: Number(m[2]), size: Number(m[3]) } : { start: 0, end: (res.ContentLength ?? 0) - 1, size: res.ContentLength ?? 0 };
    const last = Math.min(end, sent.size - 1);
    if (start >= sent.size || sent.start > start || sent.end < last) {
      body.destroy();
      if (start >= sent.size) throw rangeNotSatisfiable(key, start, sent.size);
      throw storageError(`reading bytes ${start}-${end} of s3://${this.bucket}/${key}: the server sent ${res.ContentRange ?? 'a body without Content-Range'}`);
    }
    if (sent.start === start && sent.end === last) return body;
    const slice = sliceStream(start - sent.start, last - sent.start);
    body.on('error', (err) => slice.destroy(err));
    return body.pipe(slice);
  }

  async stat(key: string): Promise<{ bytes: number } | undefined> {
    validateKey(key);
    const head = await this.head(key);
    return head ? { bytes: head.ContentLength ?? 0 } : undefined;
  }

  async list(prefix: string): Promise<string[]> {
    validateKey(prefix.replace(/\/+$/, ''));
    const folder = prefix.endsWith('/') ? prefix : `${prefix}/`;
    const keys: string[] = [];
    let token: string | undefined;
    do {
      try {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: folder, ...(token ? { ContinuationToken: token } : {}) }));
        for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } catch (err) {
        throw storageError(`listing s3://${this.bucket}/${folder} failed`, err);
      }
    } while (token);
    return keys.sort();
  }

  /** Whether the bucket is configured with Object Lock (uploads carry retention; legal holds can be set). */
  get objectLockEnabled(): boolean {
    return this.objectLock !== undefined;
  }

  /** Sets or clears the object's S3 legal-hold flag (a held object cannot be deleted or overwritten until cleared). */
  async setLegalHold(key: string, on: boolean): Promise<void> {
    validateKey(key);
    try {
      await this.client.send(new PutObjectLegalHoldCommand({ Bucket: this.bucket, Key: key, LegalHold: { Status: on ? 'ON' : 'OFF' }, ChecksumAlgorithm: 'SHA256' }));
    } catch (err) {
      throw storageError(`${on ? 'setting' : 'clearing'} the legal hold of s3://${this.bucket}/${key} failed`, err);
    }
  }

  /**
   * Gives a stored object the retention its key has now (objectLock.retainUntil): for objects stored
   * before their end was known, such as raw segments uploaded while their session was recording.
   * Returns the date set, or undefined when there is no lock or no date. S3 only lets it grow.
   */
  async applyRetention(key: string): Promise<Date | undefined> {
    validateKey(key);
    if (!this.objectLock) return undefined;
    const until = await this.objectLock.retainUntil(key);
    if (!until) return undefined;
    try {
      await this.client.send(new PutObjectRetentionCommand({ Bucket: this.bucket, Key: key, Retention: { Mode: this.objectLock.mode, RetainUntilDate: until }, ChecksumAlgorithm: 'SHA256' }));
    } catch (err) {
      throw storageError(`setting the retention of s3://${this.bucket}/${key} failed`, err);
    }
    return until;
  }

  /** Closes the client's sockets. */
  destroy(): void {
    this.client.destroy();
  }

  /** Every version id and delete marker of exactly this key. */
  private async versionsOf(key: string): Promise<string[]> {
    const ids: string[] = [];
    let keyMarker: string | undefined;
    let versionIdMarker: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(new ListObjectVersionsCommand({ Bucket: this.bucket, Prefix: key, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }));
      } catch (err) {
        throw storageError(`listing the versions of s3://${this.bucket}/${key} failed`, err);
      }
      for (const v of [...(res.Versions ?? []), ...(res.DeleteMarkers ?? [])]) if (v.Key === key && v.VersionId) ids.push(v.VersionId);
      keyMarker = res.IsTruncated ? res.NextKeyMarker : undefined;
      versionIdMarker = res.IsTruncated ? res.NextVersionIdMarker : undefined;
    } while (keyMarker !== undefined);
    return ids;
  }

  /** What protects one version: "version V: COMPLIANCE retention until <date>, legal hold ON". */
  private async lockOf(key: string, versionId: string): Promise<string> {
    const [retention, hold] = await Promise.all([
      this.client.send(new GetObjectRetentionCommand({ Bucket: this.bucket, Key: key, VersionId: versionId })).then((r) => r.Retention, () => undefined),
      this.client.send(new GetObjectLegalHoldCommand({ Bucket: this.bucket, Key: key, VersionId: versionId })).then((r) => r.LegalHold?.Status, () => undefined),
    ]);
    const parts = [
      ...(retention?.RetainUntilDate ? [`${retention.Mode ?? 'retention'} until ${retention.RetainUntilDate.toISOString()}`] : []),
      ...(hold === 'ON' ? ['legal hold ON'] : []),
    ];
    return `version ${versionId}: ${parts.length > 0 ? parts.join(', ') : 'access denied'}`;
  }

  private async head(key: string) {
    try {
      return await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw storageError(`HEAD s3://${this.bucket}/${key} failed`, err);
    }
  }
}

/** Bytes start..end (inclusive) of a stream that starts at byte 0. */
function sliceStream(start: number, end: number): Transform {
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: (err: Error | null, data?: Buffer) => void) {
      const from = Math.max(0, start - pos);
      const to = Math.min(chunk.length, end + 1 - pos);
      pos += chunk.length;
      cb(null, from < to ? chunk.subarray(from, to) : Buffer.alloc(0));
    },
  });
}

function isNotFound(err: unknown): boolean {
  if (err instanceof S3ServiceException) {
    return err.$metadata.httpStatusCode === 404 || err.name === 'NotFound' || err.name === 'NoSuchKey';
  }
  return false;
}

function storageError(message: string, cause?: unknown): VerbatimError {
  const detail = cause instanceof Error ? `: ${cause.name}: ${cause.message}` : '';
  return new VerbatimError('INTERNAL', `${message}${detail}`, {
    hint: 'Check S3_ENDPOINT, S3_BUCKET, the credentials and that the bucket exists and is reachable.',
    ...(cause !== undefined ? { cause } : {}),
  });
}
