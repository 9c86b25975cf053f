import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CODECS } from '../../../lib/contracts/codecs.ts';
import { FluentFfmpegRunner } from '../../../lib/media/ffmpeg-runner.ts';
import { syntheticSession } from '../../../../testing/synthetic-session.ts';
import { CorruptInputError, depacketizeTrack, sessionClock } from '../session-pipeline.ts';
import { depacketizerFor } from './registry.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-registry-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('depacketizer registry', () => {
  it('has a depacketizer for every codec of the table, of the right kind only', () => {
    for (const c of CODECS) {
      expect(depacketizerFor(c, c.kind)).toHaveProperty('depacketize');
      expect(depacketizerFor(c, c.kind === 'audio' ? 'video' : 'audio')).toHaveProperty('unsupported');
    }
    expect(depacketizerFor({ mimeType: 'VIDEO/vp8' }, 'video')).toHaveProperty('depacketize');
    expect(depacketizerFor({ mimeType: 'video/AV1' }, 'video')).toEqual({ unsupported: 'no depacketizer for video/AV1 (supported: audio/opus, video/VP8, video/H264)' });
  });

  it('a recorded video/AV1 track fails with CODEC_UNSUPPORTED and writes nothing, instead of going down the VP8 path', async () => {
    // The camera track (VP8 packets) labelled AV1 at the same payload type: the clock stage still reads it.
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'av1', video: true, codecs: { video: { mimeType: 'video/AV1', clockRate: 90000, payloadType: 101, parameters: {} } } });
    const clock = await sessionClock(manifestPath);
    expect(clock.tracks).toEqual([0, 1]);
    const out = mkdtempSync(path.join(tmp, 'out-'));
    const err = await depacketizeTrack(manifestPath, 1, clock, out, new FluentFfmpegRunner()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptInputError);
    expect(err).toMatchObject({ errorCode: 'CODEC_UNSUPPORTED', message: expect.stringContaining('video/AV1') });
    expect(readdirSync(out)).toEqual([]);
    // The audio track of the same session is unaffected.
    const audio = await depacketizeTrack(manifestPath, 0, clock, out, new FluentFfmpegRunner());
    expect(audio.pieces.map((p) => [p.kind, path.basename(p.file)])).toEqual([['audio', 'a-0.ogg']]);
  });

  it('an audio codec outside the table (PCMU) is refused rather than read as Opus', async () => {
    const manifestPath = syntheticSession(tmp, () => {}, { session: 'pcmu', codecs: { audio: { mimeType: 'audio/PCMU', clockRate: 8000, payloadType: 100, parameters: {} } } });
    const clock = await sessionClock(manifestPath);
    await expect(depacketizeTrack(manifestPath, 0, clock, mkdtempSync(path.join(tmp, 'out-')), new FluentFfmpegRunner())).rejects.toMatchObject({ errorCode: 'CODEC_UNSUPPORTED' });
  });
});
