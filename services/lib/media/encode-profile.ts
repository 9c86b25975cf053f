import { BITEXACT } from './ffmpeg-runner.ts';

/**
 * The one encode profile of the room composite (composite.mp4). The pipeline's render and
 * erasure's re-render both encode through it, so a re-rendered composite is the same kind of
 * file as the original. Product decision (README, "Transcode and transcription"): meeting
 * voices are mono sources, so the mix is one channel at 64 kb/s with ffmpeg's fast AAC coder
 * (the default two-loop coder cost 3x the CPU for no audible gain on speech).
 */
export const COMPOSITE_PROFILE = {
  video: { codec: 'libx264', preset: 'veryfast', crf: 28, threads: 1, fps: 15, cellWidth: 320, cellHeight: 240, pixelFormat: 'yuv420p' },
  audio: { codec: 'aac', coder: 'fast', bitrate: '64k', sampleRate: 48_000, channels: 1 },
  /** moov before mdat: the console's player starts before the whole file has arrived. */
  faststart: true,
} as const;

/** The composite's AAC output options (after the audio stream's -map). */
export const COMPOSITE_AAC: readonly string[] = [
  '-c:a', COMPOSITE_PROFILE.audio.codec,
  '-aac_coder', COMPOSITE_PROFILE.audio.coder,
  '-b:a', COMPOSITE_PROFILE.audio.bitrate,
  '-ar', String(COMPOSITE_PROFILE.audio.sampleRate),
  '-ac', String(COMPOSITE_PROFILE.audio.channels),
];

/** The composite's H.264 output options (after the video stream's -map). */
export const COMPOSITE_X264: readonly string[] = [
  '-c:v', COMPOSITE_PROFILE.video.codec,
  '-preset', COMPOSITE_PROFILE.video.preset,
  '-crf', String(COMPOSITE_PROFILE.video.crf),
  '-threads', String(COMPOSITE_PROFILE.video.threads),
  '-r', String(COMPOSITE_PROFILE.video.fps),
];

/** The container options: cut at the session's length, faststart, and the same bytes for the same input. */
export function compositeContainer(durationSeconds: number): string[] {
  return ['-t', String(durationSeconds), ...(COMPOSITE_PROFILE.faststart ? ['-movflags', '+faststart'] : []), ...BITEXACT, '-f', 'mp4'];
}
