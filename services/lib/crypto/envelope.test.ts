import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, expect, it } from 'vitest';
import { cipherRange, DecryptStream, EncryptStream, encryptedSize, parseHeader, plaintextSize } from './envelope.ts';

const key = randomBytes(32);

async function seal(plain: Buffer, chunkSize: number, pieces = 3): Promise<Buffer> {
  // Fed in uneven pieces: chunk boundaries must not depend on how the input arrives.
  const parts: Buffer[] = [];
  for (let i = 0; i < plain.length; i += Math.max(1, Math.ceil(plain.length / pieces) - 1)) parts.push(plain.subarray(i, i + Math.max(1, Math.ceil(plain.length / pieces) - 1)));
  return buffer(Readable.from(parts).pipe(new EncryptStream(key, 'dk_test', chunkSize)));
}

const open = (stored: Buffer, k = key) => buffer(Readable.from([stored]).pipe(new DecryptStream({ key: () => k })));

async function range(stored: Buffer, start: number, end: number): Promise<Buffer> {
  const h = parseHeader(stored);
  if (!h || h === 'short') throw new Error('no header');
  const plain = plaintextSize(h, stored.length);
  const r = cipherRange(h, plain, start, Math.min(end, plain - 1));
  return buffer(Readable.from([stored.subarray(r.storedStart, r.storedEnd + 1)]).pipe(new DecryptStream({ header: h, key: () => key, firstChunk: r.firstChunk, finalChunk: r.finalChunk, skip: r.skip, take: r.take })));
}

describe('encryption envelope (AES-256-GCM in chunks)', () => {
  it('round-trips empty, sub-chunk, exact-multiple and ragged sizes; sizes map both ways', async () => {
    for (const n of [0, 1, 99, 100, 101, 1000, 1050]) {
      const plain = randomBytes(n);
      const stored = await seal(plain, 100);
      const h = parseHeader(stored);
      if (!h || h === 'short') throw new Error('no header');
      expect(h.keyId).toBe('dk_test');
      expect(stored.length).toBe(encryptedSize(h, n));
      expect(plaintextSize(h, stored.length)).toBe(n);
      expect((await open(stored)).equals(plain)).toBe(true);
      expect(stored.includes(plain.subarray(0, Math.min(16, n))) && n >= 16).toBe(false);
    }
  });

  it('any byte range decrypts from only the chunks that cover it', async () => {
    const plain = randomBytes(1050);
    const stored = await seal(plain, 100);
    for (const [s, e] of [[0, 0], [0, 99], [99, 100], [150, 420], [1000, 1049], [1049, 5000], [300, 300]] as const) {
      expect((await range(stored, s, e)).equals(plain.subarray(s, Math.min(e, 1049) + 1))).toBe(true);
    }
  });

  it('refuses a wrong key, an altered byte, reordered chunks, a cut at a chunk boundary and appended bytes', async () => {
    const plain = randomBytes(1000);
    const stored = await seal(plain, 100);
    const h = parseHeader(stored) as Exclude<ReturnType<typeof parseHeader>, 'short' | undefined>;
    const sealed = 116;
    await expect(open(stored, randomBytes(32))).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
    const flipped = Buffer.from(stored);
    flipped[h.bytes.length + 250]! ^= 1;
    await expect(open(flipped)).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
    const swapped = Buffer.concat([stored.subarray(0, h.bytes.length), stored.subarray(h.bytes.length + sealed, h.bytes.length + 2 * sealed), stored.subarray(h.bytes.length, h.bytes.length + sealed), stored.subarray(h.bytes.length + 2 * sealed)]);
    await expect(open(swapped)).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
    // 10 chunks; dropping the last whole chunk leaves a valid-looking layout whose last chunk is not flagged final.
    await expect(open(stored.subarray(0, stored.length - sealed))).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
    await expect(open(Buffer.concat([stored, stored.subarray(h.bytes.length, h.bytes.length + sealed)]))).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
    // A header whose key id was swapped no longer authenticates any chunk.
    const other = Buffer.from(stored);
    other.write('dk_tesu', h.bytes.length - 7, 'utf8');
    await expect(open(other)).rejects.toMatchObject({ code: 'CIPHERTEXT_INVALID' });
  });
});
