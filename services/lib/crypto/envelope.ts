import { createCipheriv, createDecipheriv, randomBytes, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { VerbatimError } from '../errors.ts';

/**
 * The at-rest encryption envelope (issue 10 item 4): AES-256-GCM over fixed-size plaintext chunks, so
 * a stream is encrypted and decrypted in constant memory and any plaintext byte range maps to the few
 * chunks that cover it (HTTP Range decrypts only those).
 *
 * Layout: header, then chunks of `chunkSize` plaintext bytes (the last one shorter, possibly empty)
 * each followed by its 16-byte tag.
 *   header = "VENC" | version u8 (1) | keyId length u8 | chunkSize u32 BE | nonce prefix (8 random bytes) | keyId (UTF-8)
 *   nonce of chunk i = nonce prefix | i as u32 BE;  AAD of chunk i = header | final flag u8 (1 on the last chunk)
 * The header is authenticated by every chunk (a swapped key id or chunk size fails), the index in the
 * nonce pins each chunk's position (reordering fails), and the final flag makes a file cut at a chunk
 * boundary, or with chunks appended, fail as well.
 */
export const ENVELOPE_MAGIC = Buffer.from('VENC', 'ascii');
export const ENVELOPE_VERSION = 1;
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const TAG_BYTES = 16;
const FIXED_HEADER_BYTES = 4 + 1 + 1 + 4 + 8;
/** The most bytes a header can take (a 255-byte key id): read this much to parse any header. */
export const MAX_HEADER_BYTES = FIXED_HEADER_BYTES + 255;
const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

export interface EnvelopeHeader {
  keyId: string;
  chunkSize: number;
  noncePrefix: Buffer;
  /** The header's bytes as stored (the chunks' AAD). */
  bytes: Buffer;
}

export function encodeHeader(keyId: string, chunkSize = DEFAULT_CHUNK_SIZE, noncePrefix = randomBytes(8)): EnvelopeHeader {
  const id = Buffer.from(keyId, 'utf8');
  if (id.length === 0 || id.length > 255) throw new VerbatimError('BAD_REQUEST', `key id "${keyId}" must be 1-255 bytes`, { hint: 'Data key ids come from data-keys.ts.' });
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1 || chunkSize > MAX_CHUNK_SIZE) throw new VerbatimError('BAD_REQUEST', `chunk size ${chunkSize} out of range`, { hint: `Use 1..${MAX_CHUNK_SIZE} bytes (default 64 KiB).` });
  const bytes = Buffer.alloc(FIXED_HEADER_BYTES + id.length);
  ENVELOPE_MAGIC.copy(bytes, 0);
  bytes.writeUInt8(ENVELOPE_VERSION, 4);
  bytes.writeUInt8(id.length, 5);
  bytes.writeUInt32BE(chunkSize, 6);
  noncePrefix.copy(bytes, 10, 0, 8);
  id.copy(bytes, FIXED_HEADER_BYTES);
  return { keyId, chunkSize, noncePrefix: Buffer.from(noncePrefix.subarray(0, 8)), bytes };
}

/** Whether the bytes start like an envelope (the magic); a clear file does not. */
export function isEnvelope(start: Buffer): boolean {
  return start.length >= 4 && start.subarray(0, 4).equals(ENVELOPE_MAGIC);
}

/**
 * The header at the start of `buf`: undefined when `buf` does not start with the magic (a clear file),
 * 'short' when more bytes are needed; throws on an unknown version or a malformed header.
 */
export function parseHeader(buf: Buffer): EnvelopeHeader | 'short' | undefined {
  if (buf.length < 4) return ENVELOPE_MAGIC.subarray(0, buf.length).equals(buf) ? 'short' : undefined;
  if (!isEnvelope(buf)) return undefined;
  if (buf.length < FIXED_HEADER_BYTES) return 'short';
  const version = buf.readUInt8(4);
  if (version !== ENVELOPE_VERSION) throw new VerbatimError('UNSUPPORTED_VERSION', `encryption envelope version ${version} is not supported`, { hint: `This build reads version ${ENVELOPE_VERSION}.` });
  const idLen = buf.readUInt8(5);
  const chunkSize = buf.readUInt32BE(6);
  if (idLen === 0 || chunkSize === 0 || chunkSize > MAX_CHUNK_SIZE) throw corrupt('malformed envelope header');
  if (buf.length < FIXED_HEADER_BYTES + idLen) return 'short';
  const bytes = Buffer.from(buf.subarray(0, FIXED_HEADER_BYTES + idLen));
  return { keyId: bytes.subarray(FIXED_HEADER_BYTES).toString('utf8'), chunkSize, noncePrefix: bytes.subarray(10, 18), bytes };
}

/** Stored size of `plainBytes` bytes: header + plaintext + one tag per chunk (an empty file still has one chunk). */
export function encryptedSize(header: Pick<EnvelopeHeader, 'chunkSize' | 'bytes'>, plainBytes: number): number {
  return header.bytes.length + plainBytes + TAG_BYTES * chunkCount(header.chunkSize, plainBytes);
}

function chunkCount(chunkSize: number, plainBytes: number): number {
  return Math.max(1, Math.ceil(plainBytes / chunkSize));
}

/** Plaintext size of a stored envelope of `storedBytes`; throws when no chunk layout gives that size (truncated). */
export function plaintextSize(header: Pick<EnvelopeHeader, 'chunkSize' | 'bytes'>, storedBytes: number): number {
  const body = storedBytes - header.bytes.length;
  const n = Math.ceil(body / (header.chunkSize + TAG_BYTES));
  const plain = body - n * TAG_BYTES;
  if (body < TAG_BYTES || plain < 0 || encryptedSize(header, plain) !== storedBytes) throw corrupt(`an encrypted object of ${storedBytes} bytes is truncated`);
  return plain;
}

/** The stored bytes (inclusive) holding plaintext bytes start..end (inclusive, end < plaintext size), and how to cut them. */
export function cipherRange(header: Pick<EnvelopeHeader, 'chunkSize' | 'bytes'>, plainBytes: number, start: number, end: number) {
  const cs = header.chunkSize;
  const first = Math.floor(start / cs);
  const last = Math.floor(end / cs);
  const stored = encryptedSize(header, plainBytes);
  return {
    storedStart: header.bytes.length + first * (cs + TAG_BYTES),
    storedEnd: Math.min(header.bytes.length + (last + 1) * (cs + TAG_BYTES), stored) - 1,
    firstChunk: first,
    finalChunk: chunkCount(cs, plainBytes) - 1,
    skip: start - first * cs,
    take: end - start + 1,
  };
}

function nonceOf(header: EnvelopeHeader, index: number): Buffer {
  const n = Buffer.alloc(12);
  header.noncePrefix.copy(n, 0);
  n.writeUInt32BE(index, 8);
  return n;
}

/** AAD of a chunk: the header and the final flag; the two variants are built once per header. */
const aadCache = new WeakMap<EnvelopeHeader, [Buffer, Buffer]>();
function aadOf(header: EnvelopeHeader, final: boolean): Buffer {
  let pair = aadCache.get(header);
  if (!pair) {
    pair = [Buffer.concat([header.bytes, Buffer.from([0])]), Buffer.concat([header.bytes, Buffer.from([1])])];
    aadCache.set(header, pair);
  }
  return pair[final ? 1 : 0];
}

/** One sealed chunk as [ciphertext, tag] (two buffers, so nothing is copied to join them). */
export function sealChunkParts(key: Buffer, header: EnvelopeHeader, index: number, final: boolean, plain: Buffer): [Buffer, Buffer] {
  if (index > 0xffffffff) throw new VerbatimError('BAD_REQUEST', 'object too large for one envelope', { hint: 'Use a larger chunk size.' });
  const c = createCipheriv('aes-256-gcm', key, nonceOf(header, index));
  c.setAAD(aadOf(header, final));
  const body = c.update(plain);
  c.final();
  return [body, c.getAuthTag()];
}

export function sealChunk(key: Buffer, header: EnvelopeHeader, index: number, final: boolean, plain: Buffer): Buffer {
  return Buffer.concat(sealChunkParts(key, header, index, final, plain));
}

export function openChunk(key: Buffer, header: EnvelopeHeader, index: number, final: boolean, sealed: Buffer): Buffer {
  if (sealed.length < TAG_BYTES) throw corrupt(`encrypted chunk ${index} is truncated`);
  const d = createDecipheriv('aes-256-gcm', key, nonceOf(header, index));
  d.setAAD(aadOf(header, final));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    const plain = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
    d.final();
    return plain;
  } catch {
    throw corrupt(`encrypted chunk ${index} does not authenticate (wrong key, or the object was truncated, reordered or altered)`);
  }
}

/**
 * Collects a stream's bytes into fixed-size blocks with one copy each. A full block is handed on only
 * once a further byte arrives, so the block the stream ends with is known to be the last one.
 */
class Blocks {
  private block: Buffer;
  private used = 0;

  constructor(readonly size: number) {
    this.block = Buffer.allocUnsafe(size);
  }

  /** Feeds bytes; calls `full` for each block that is known not to be the last. */
  feed(data: Buffer, full: (block: Buffer) => void): void {
    let off = 0;
    while (off < data.length) {
      if (this.used === this.size) {
        full(this.block);
        this.used = 0;
      }
      const n = Math.min(this.size - this.used, data.length - off);
      data.copy(this.block, this.used, off, off + n);
      this.used += n;
      off += n;
    }
  }

  /** The bytes held at the end (the last block, possibly short or empty). */
  rest(): Buffer {
    return this.block.subarray(0, this.used);
  }
}

/** Plaintext in, envelope out: the header first, then each chunk once the next byte shows it is not the last. */
export class EncryptStream extends Transform {
  readonly header: EnvelopeHeader;
  private readonly blocks: Blocks;
  private index = 0;
  private started = false;
  /** Plaintext bytes seen. */
  plainBytes = 0;

  constructor(
    private readonly key: Buffer,
    keyId: string,
    chunkSize = DEFAULT_CHUNK_SIZE,
    /** Also hashes the plaintext as it passes (the stored object's plaintext SHA-256, without another pass). */
    private readonly plainHash?: Hash,
  ) {
    super({ readableHighWaterMark: 1 << 20 });
    checkKey(key);
    this.header = encodeHeader(keyId, chunkSize);
    this.blocks = new Blocks(chunkSize);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.start();
      this.plainBytes += chunk.length;
      this.plainHash?.update(chunk);
      this.blocks.feed(chunk, (block) => this.seal(block, false));
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.start();
      this.seal(this.blocks.rest(), true);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }

  private seal(plain: Buffer, final: boolean): void {
    const [body, tag] = sealChunkParts(this.key, this.header, this.index++, final, plain);
    if (body.length > 0) this.push(body);
    this.push(tag);
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.push(this.header.bytes);
  }
}

export interface DecryptOptions {
  /** The header when the stream starts past it (a ranged read); unset: the stream starts with the header. */
  header?: EnvelopeHeader;
  /** The data key for the header's key id (looked up once the header is read). */
  key: (keyId: string) => Buffer | Promise<Buffer>;
  /** Index of the stream's first chunk (ranged reads). */
  firstChunk?: number;
  /** Index of the object's last chunk when known (ranged reads); unset: the chunk the stream ends with. */
  finalChunk?: number;
  /** Plaintext bytes to drop at the start and to emit at most (ranged reads). */
  skip?: number;
  take?: number;
}

/** Envelope in, plaintext out; errors (CIPHERTEXT_INVALID) on any chunk that does not authenticate or a truncated stream. */
export class DecryptStream extends Transform {
  private header: EnvelopeHeader | undefined;
  private key: Buffer | undefined;
  /** Bytes before the header is complete. */
  private pending: Buffer = Buffer.alloc(0);
  private blocks: Blocks | undefined;
  private index: number;
  private readonly first: number;
  private skip: number;
  private left: number;

  constructor(private readonly opts: DecryptOptions) {
    super();
    this.header = opts.header;
    this.index = this.first = opts.firstChunk ?? 0;
    this.skip = opts.skip ?? 0;
    this.left = opts.take ?? Number.POSITIVE_INFINITY;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.key && this.blocks) {
      try {
        this.blocks.feed(chunk, (block) => this.open(block, false));
        cb();
      } catch (err) {
        cb(err as Error);
      }
      return;
    }
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.begin(false).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    this.begin(true)
      .then(() => {
        const rest = this.blocks!.rest();
        if (rest.length > 0 || this.index === this.first) this.open(rest, true);
        cb();
      })
      .catch(cb);
  }

  /** Parses the header and looks the key up once; then feeds what came with them. */
  private async begin(end: boolean): Promise<void> {
    if (this.key && this.blocks) return;
    if (!this.header) {
      const h = parseHeader(this.pending);
      if (h === undefined) throw corrupt('not an encrypted object (no envelope header)');
      if (h === 'short') {
        if (end) throw corrupt('encrypted object truncated inside its header');
        return;
      }
      this.header = h;
      this.pending = this.pending.subarray(h.bytes.length);
    }
    this.key = await this.opts.key(this.header.keyId);
    checkKey(this.key);
    this.blocks = new Blocks(this.header.chunkSize + TAG_BYTES);
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    this.blocks.feed(rest, (block) => this.open(block, false));
  }

  /** Opens one sealed chunk; ending on a full chunk of a ranged read is final only if it is the object's last chunk. */
  private open(sealed: Buffer, atEnd: boolean): void {
    const final = atEnd && (this.opts.finalChunk === undefined || this.index === this.opts.finalChunk);
    if (this.opts.finalChunk !== undefined && this.index > this.opts.finalChunk) throw corrupt('encrypted object has bytes past its last chunk');
    this.deliver(openChunk(this.key!, this.header!, this.index++, final, sealed));
  }

  private deliver(plain: Buffer): void {
    let p = plain;
    if (this.skip > 0) {
      const s = Math.min(this.skip, p.length);
      p = p.subarray(s);
      this.skip -= s;
    }
    if (p.length > this.left) p = p.subarray(0, this.left);
    this.left -= p.length;
    if (p.length > 0) this.push(p);
  }
}

function checkKey(key: Buffer): void {
  if (key.length !== 32) throw new VerbatimError('INTERNAL', `data key is ${key.length} bytes, AES-256 needs 32`, { hint: 'Data keys come from data-keys.ts.' });
}

function corrupt(message: string): VerbatimError {
  return new VerbatimError('CIPHERTEXT_INVALID', message, { hint: 'The stored object is damaged or was tampered with; its data key may also have been destroyed and replaced.' });
}
