import { configSpec, type Config } from '../../lib/config.ts';
import type { SessionManifest } from '../../lib/contracts/recording.ts';
import { locateSegment, uploadPending, type SegmentSource } from '../../lib/recording/segment-source.ts';

/**
 * What one session may cost transcode (TRANSCODE_MAX_SESSION_HOURS / _BYTES). Checked by
 * the clock stage before any file is written: from the manifest first (segment sizes on
 * disk, first and last arrivals) so a huge recording is never read, then again from the
 * packets' own arrival times. Every later stage is bounded by the clock's duration.
 */
export interface SessionLimits {
  maxSessionSeconds: number;
  maxSessionBytes: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxSessionSeconds: configSpec.TRANSCODE_MAX_SESSION_HOURS.default * 3600,
  maxSessionBytes: configSpec.TRANSCODE_MAX_SESSION_BYTES.default,
};

export function sessionLimitsFromConfig(config: Pick<Config, 'TRANSCODE_MAX_SESSION_HOURS' | 'TRANSCODE_MAX_SESSION_BYTES'>): SessionLimits {
  return { maxSessionSeconds: config.TRANSCODE_MAX_SESSION_HOURS * 3600, maxSessionBytes: config.TRANSCODE_MAX_SESSION_BYTES };
}

/** Why a session is over a limit (its message), or undefined. */
export type LimitCheck = { code: 'SESSION_TOO_LARGE' | 'CORRUPT_RECORDING' | 'MISSING_SEGMENT' | 'UPLOAD_PENDING'; message: string } | undefined;

export const TOO_LARGE_HINT =
  'The raw recording is kept. To process it anyway, raise TRANSCODE_MAX_SESSION_HOURS / TRANSCODE_MAX_SESSION_BYTES on the transcode workers and retry the session.finalize job.';

/**
 * The manifest's own account of the session against the limits, before a byte of media is
 * read: every segment file must be the size the manifest gives it (a larger file is not the
 * one that was sealed), their sum within maxSessionBytes, and the span from the first
 * packet's arrival to the last one's within maxSessionSeconds.
 */
export async function checkManifestLimits(m: SessionManifest, src: SegmentSource, limits: SessionLimits): Promise<LimitCheck> {
  let bytes = 0;
  for (const t of m.tracks) {
    for (const s of t.segments) {
      // The local file, or its stored copy once the recorder uploaded it (segment-source.ts).
      const where = await locateSegment(src, s);
      if (!where) {
        const message = `segment ${s.file} is missing: not in ${src.dir}${src.storage ? ' nor in storage' : ''}`;
        return { code: uploadPending(src, s) ? 'UPLOAD_PENDING' : 'MISSING_SEGMENT', message };
      }
      const size = where.bytes;
      if (size !== s.bytes) return { code: 'CORRUPT_RECORDING', message: `segment ${s.file} is ${size} bytes, the manifest says ${s.bytes}` };
      bytes += size;
    }
  }
  if (bytes > limits.maxSessionBytes) return { code: 'SESSION_TOO_LARGE', message: `the raw recording is ${bytes} bytes, more than TRANSCODE_MAX_SESSION_BYTES (${limits.maxSessionBytes})` };
  const segs = m.tracks.flatMap((t) => t.segments).filter((s) => s.firstArrivalUs !== null && s.lastArrivalUs !== null);
  if (segs.length > 0) {
    const seconds = (Math.max(...segs.map((s) => s.lastArrivalUs!)) - Math.min(...segs.map((s) => s.firstArrivalUs!))) / 1e6;
    if (seconds > limits.maxSessionSeconds) return tooLong(seconds, limits);
  }
  return undefined;
}

export function tooLong(seconds: number, limits: SessionLimits): LimitCheck {
  return { code: 'SESSION_TOO_LARGE', message: `the session's packets arrived over ${seconds.toFixed(1)} s, longer than TRANSCODE_MAX_SESSION_HOURS (${limits.maxSessionSeconds / 3600} h)` };
}
