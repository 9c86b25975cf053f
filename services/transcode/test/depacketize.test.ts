import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { audioOnsets, ffprobe } from '../../../testing/media-fixtures.ts';
import { encodeFileHeader } from '../../lib/recording/vrtp-format.ts';
import { sampleHeader } from '../../../testing/recording-fixtures.ts';
import { rtpOpusToOgg, opusPacketSamples } from '../src/depacketize/ogg-opus.ts';
import { readTrackPackets } from '../src/depacketize/rtp-stream.ts';
import { FluentFfmpegRunner } from '../../lib/media/ffmpeg-runner.ts';
import { syntheticSession, syntheticTrack } from '../../../testing/synthetic-session.ts';
import { CorruptInputError, runSessionPipeline } from '../src/session-pipeline.ts';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'verbatim-depkt-'));

describe('Opus depacketizer', () => {
  it('counts samples per packet from the TOC byte', () => {
    expect(opusPacketSamples(Buffer.from([0xfc, 0xff, 0xfe]))).toBe(960);
    expect(opusPacketSamples(Buffer.from([0x78]))).toBe(960); // hybrid FB 20 ms (config 15)
  });

  it('5% loss, DTX silences, duplicates, reordering and wraparound: duration still equals the wall-clock span ±100 ms', async () => {
    const track = syntheticTrack({ seconds: 12, lossPct: 5, dtx: [[3, 4.5], [8, 9.2]], seed: 42 }, tmp);
    const header = sampleHeader({ ssrc: track.ssrc, startedAtUs: track.t0, track: 'syn' });
    const file = Buffer.concat([encodeFileHeader(header), ...track.records]);
    const parsed = readTrackPackets(file, 'syn');
    expect(parsed.dropped.duplicate).toBeGreaterThan(0);
    // last packet may have been lost: fill to the end of the track's span
    const lastTs = parsed.packets.at(-1)!.ts;
    const ogg = rtpOpusToOgg(parsed.packets, { channels: 2, serial: 1 });
    const out = path.join(tmp, 'syn.ogg');
    writeFileSync(out, ogg.data);
    const probe = ffprobe(out);
    const expectedSpan = (lastTs - parsed.packets[0]!.ts) / 48000 + 0.02;
    expect(Math.abs(Number(probe.format.duration) - expectedSpan)).toBeLessThan(0.1);
    expect(Math.abs(expectedSpan - track.wallSpan)).toBeLessThan(0.1);
    expect(ogg.filledSamples / 48000).toBeGreaterThan(2.7); // both DTX pauses (1.5 + 1.2 s) + losses
    // ffmpeg decodes it fully without errors
    const decoded = execFileSync('ffmpeg', ['-v', 'error', '-i', out, '-f', 'null', '-'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(decoded).toBe('');
  });
});

describe('session pipeline input checks', () => {
  it('a clean synthetic session builds', async () => {
    const manifest = syntheticSession(tmp, () => {});
    const out = mkdtempSync(path.join(tmp, 'out-'));
    const res = await runSessionPipeline(manifest, out, new FluentFfmpegRunner());
    expect(res.files.map((f) => f.kind).sort()).toEqual(['composite', 'participant-av', 'participant-wav', 'track']);
  });

  it('tracks the recorder split in two segments (restart, 3 s down): the participant file holds both at their real offsets, bitexact', async () => {
    const manifest = syntheticSession(tmp, () => {}, { seconds: 2, restart: { gapSeconds: 3, seconds: 2 }, video: true });
    const run = async () => {
      const out = mkdtempSync(path.join(tmp, 'out-'));
      const res = await runSessionPipeline(manifest, out, new FluentFfmpegRunner());
      return { res, av: res.files.find((f) => f.kind === 'participant-av')!.path };
    };
    const { res, av } = await run();
    // arrival-time mapping: the synthetic network adds up to 3 ms of jitter
    const audio = res.pieces.filter((p) => p.kind === 'audio');
    expect(audio).toHaveLength(2);
    expect(Math.abs(audio[1]!.offset - 5)).toBeLessThan(0.005);
    // (audio is placed one packet, 20 ms, before its arrival: see wallClockMapper)
    const video = res.pieces.filter((p) => p.kind === 'video').map((p) => p.offset);
    expect(video).toHaveLength(2);
    expect(Math.abs(video[1]! - video[0]! - 5)).toBeLessThan(0.005);
    // the track's wall-clock span: first packet of segment 0 to the end of the last packet of segment 1
    expect(Math.abs(Number(ffprobe(av).format.duration) - 7)).toBeLessThan(0.1);
    expect(ffprobe(av).streams.map((x) => x.codec_name)).toEqual(['opus', 'vp8']);
    // Video: frames up to the restart, none while the recorder was down, frames again from 5 s.
    const vpts = execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'packet=pts_time', '-of', 'csv=p=0', av], { encoding: 'utf8' }).trim().split('\n').map(Number);
    expect(vpts.filter((t) => t > 2.05 && t < 4.99)).toEqual([]);
    expect(vpts.filter((t) => t >= 4.99).length).toBe(30);
    // (relative to the first frame: Matroska shifts the whole file by the Opus pre-skip, 6.5 ms)
    expect(Math.abs(vpts.find((t) => t >= 4.99)! - vpts[0]! - (video[1]! - video[0]!))).toBeLessThan(0.002);
    expect(vpts.at(-1)!).toBeGreaterThan(6.9);
    const onsets = audioOnsets(av);
    expect(onsets).toHaveLength(1);
    expect(Math.abs(onsets[0]! - 5)).toBeLessThan(0.1);
    // the gap is decoded silence, not missing samples: the ASR WAV and the A/V file agree
    expect(audioOnsets(res.files.find((f) => f.kind === 'participant-wav')!.path).map((t) => Math.round(t * 10) / 10)).toEqual([5]);
    const again = await run();
    expect(readFileSync(again.av).equals(readFileSync(av))).toBe(true);
  });

  it('segments split by the recorder\'s timed rotation are read as one stream: one piece per track, gapless', async () => {
    const manifest = syntheticSession(
      tmp,
      (_dir, m) => {
        for (const t of m.tracks) t.segments[0]!.endReason = 'rotation';
      },
      { seconds: 2, restart: { gapSeconds: 0, seconds: 2 }, video: true },
    );
    const out = mkdtempSync(path.join(tmp, 'out-'));
    const res = await runSessionPipeline(manifest, out, new FluentFfmpegRunner());
    expect(res.pieces.filter((p) => p.kind === 'audio')).toHaveLength(1);
    expect(res.pieces.filter((p) => p.kind === 'video')).toHaveLength(1);
    const av = res.files.find((f) => f.kind === 'participant-av')!.path;
    expect(Math.abs(Number(ffprobe(av).format.duration) - 4)).toBeLessThan(0.1);
  });

  it('corrupt input fails with a stable code: flipped byte, missing segment, bad manifest', async () => {
    const out = mkdtempSync(path.join(tmp, 'out-'));
    const flipped = syntheticSession(tmp, (dir) => {
      const f = path.join(dir, 'a-0.vrtp');
      const b = readFileSync(f);
      b[200]! ^= 0xff;
      writeFileSync(f, b);
    });
    await expect(runSessionPipeline(flipped, out, new FluentFfmpegRunner())).rejects.toMatchObject({ errorCode: 'CORRUPT_RECORDING' });
    const missing = syntheticSession(tmp, (_dir, m) => (m.tracks[0]!.segments[0]!.file = 'gone-0.vrtp'));
    await expect(runSessionPipeline(missing, out, new FluentFfmpegRunner())).rejects.toMatchObject({ errorCode: 'MISSING_SEGMENT' });
    const badDir = mkdtempSync(path.join(tmp, 'bad-'));
    mkdirSync(badDir, { recursive: true });
    writeFileSync(path.join(badDir, 'manifest.json'), '{"format":"something-else"}');
    const err = await runSessionPipeline(path.join(badDir, 'manifest.json'), out, new FluentFfmpegRunner()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptInputError);
    expect((err as CorruptInputError).errorCode).toBe('CORRUPT_MANIFEST');
  });
});
