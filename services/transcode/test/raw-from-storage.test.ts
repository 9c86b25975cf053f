import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { readManifest } from '../../lib/recording/manifest-file.ts';
import { openSegment } from '../../lib/recording/segment-source.ts';
import { rawSegmentKey } from '../../lib/storage/artifact-keys.ts';
import { LocalArtifactStorage, type ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import { syntheticSession } from '../../../testing/synthetic-session.ts';
import { startS3rver, type TestS3 } from '../../../testing/s3rver.ts';
import { CorruptInputError, depacketizeSession, depacketizeTrack, sessionClock } from '../src/session-pipeline.ts';

/**
 * Raw media in object storage (issue 15 item 4): once the recorder has uploaded a session's segments
 * and removed them from its disk, transcode reads them from artifact storage, on any host. Run
 * against the filesystem backend and an S3 endpoint (s3rver).
 */
const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-rawstore-'));
let s3: TestS3;
beforeAll(async () => {
  s3 = await startS3rver(path.join(tmp, 's3rver'));
});
afterAll(async () => {
  await s3?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const ffmpeg = new FluentFfmpegRunner();

const backends: [string, () => Promise<ArtifactStorage>][] = [
  ['filesystem', async () => new LocalArtifactStorage(path.join(tmp, 'artifacts'))],
  ['s3rver', () => s3.storage('verbatim-raw')],
];

describe.each(backends)('transcode reads raw segments from storage (%s)', (name, makeStorage) => {
  it('a session whose local segments are gone depacketizes from the stored copies, to the same bytes as from disk', async () => {
    const storage = await makeStorage();
    // Audio and VP8 video, each in two segments (a recorder restart between them).
    const manifestPath = syntheticSession(tmp, () => {}, { session: `gone-${name}`, seconds: 2, restart: { gapSeconds: 1, seconds: 1 }, video: true });
    const dir = path.dirname(manifestPath);
    const ref = await depacketizeSession(manifestPath, mkdtempSync(path.join(tmp, 'ref-')), ffmpeg);
    expect(ref.pieces).toHaveLength(4);

    const m = readManifest(manifestPath);
    const files = m.tracks.flatMap((t) => t.segments.map((s) => s.file));
    for (const f of files) await storage.put(rawSegmentKey(m.room, m.session, f), path.join(dir, f), 'application/octet-stream');
    // A ranged read of a stored copy: the bytes from an offset on, as on disk.
    const first = m.tracks[0]!.segments[0]!;
    const local = readFileSync(path.join(dir, first.file));
    for (const f of files) rmSync(path.join(dir, f));

    const chunks: Buffer[] = [];
    for await (const c of await openSegment({ dir, room: m.room, session: m.session, storage }, first, 100)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).equals(local.subarray(100))).toBe(true);

    // Without storage the session is missing its segments; with it, it is whole again.
    await expect(depacketizeSession(manifestPath, mkdtempSync(path.join(tmp, 'none-')), ffmpeg)).rejects.toMatchObject({ errorCode: 'MISSING_SEGMENT' });
    const out = mkdtempSync(path.join(tmp, 'out-'));
    const got = await depacketizeSession(manifestPath, out, ffmpeg, () => {}, undefined, storage);
    expect(got.durationSeconds).toBe(ref.durationSeconds);
    expect(got.pieces.map((p) => [p.participant, p.kind, path.basename(p.file), p.offset, p.duration, sha(p.file)])).toEqual(
      ref.pieces.map((p) => [p.participant, p.kind, path.basename(p.file), p.offset, p.duration, sha(p.file)]),
    );

    // The flow's stages, each on its own (another host): the clock, then one track.
    const clock = await sessionClock(manifestPath, undefined, storage);
    expect(clock.tracks).toEqual([0, 1]);
    const video = await depacketizeTrack(manifestPath, 1, clock, mkdtempSync(path.join(tmp, 'stage-')), ffmpeg, undefined, 'v', storage);
    expect(video.pieces.map((p) => sha(p.file))).toEqual(ref.pieces.filter((p) => p.kind === 'video').map((p) => sha(p.file)));
  });

  it('a stored copy that is not the sealed segment is CORRUPT_RECORDING, never read as the recording', async () => {
    const storage = await makeStorage();
    const manifestPath = syntheticSession(tmp, () => {}, { session: `bad-${name}`, seconds: 1 });
    const dir = path.dirname(manifestPath);
    const m = readManifest(manifestPath);
    const seg = m.tracks[0]!.segments[0]!;
    const file = path.join(dir, seg.file);
    const bytes = readFileSync(file);
    // Same size, one byte flipped: only the SHA-256 can tell.
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    writeFileSync(file, bytes);
    await storage.put(rawSegmentKey(m.room, m.session, seg.file), file, 'application/octet-stream');
    rmSync(file);
    const err = await sessionClock(manifestPath, undefined, storage).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptInputError);
    expect(err).toMatchObject({ errorCode: 'CORRUPT_RECORDING', message: expect.stringContaining('SHA-256') });
  });
});
