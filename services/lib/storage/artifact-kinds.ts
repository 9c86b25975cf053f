import path from 'node:path';
import { VerbatimError } from '../errors.ts';

/**
 * The closed set of artifact kinds a session produces, with the content types each may
 * have (by file extension) and the retention class that governs it. Transcode registers
 * artifacts with these; the API, retention, export and Object Lock read them back.
 */
export const ARTIFACT_KINDS = {
  /** The room composite: everyone on one timeline (H.264 + AAC). */
  composite: { retention: 'media', types: { '.mp4': 'video/mp4' } },
  /** One participant's audio and video, stream copied. */
  'participant-av': { retention: 'media', types: { '.mkv': 'video/x-matroska' } },
  /** One participant's audio on the session timeline, 16 kHz mono, for ASR. */
  'participant-wav': { retention: 'media', types: { '.wav': 'audio/wav' } },
  /** One depacketized track segment (Ogg Opus, IVF VP8, Matroska H.264). */
  track: { retention: 'media', types: { '.ogg': 'audio/ogg', '.ivf': 'video/x-ivf', '.mkv': 'video/x-matroska' } },
  'transcript-json': { retention: 'transcript', types: { '.json': 'application/json' } },
  'transcript-vtt': { retention: 'transcript', types: { '.vtt': 'text/vtt' } },
  'transcript-txt': { retention: 'transcript', types: { '.txt': 'text/plain' } },
} as const satisfies Record<string, { retention: 'media' | 'transcript'; types: Record<string, string> }>;

export type ArtifactKind = keyof typeof ARTIFACT_KINDS;
export const ARTIFACT_KIND_NAMES = Object.keys(ARTIFACT_KINDS) as ArtifactKind[];

export function isArtifactKind(kind: string): kind is ArtifactKind {
  return Object.hasOwn(ARTIFACT_KINDS, kind);
}

/** The content type of `file` stored as `kind`; a file type the kind does not allow is a programming error. */
export function artifactContentType(kind: ArtifactKind, file: string): string {
  const types: Record<string, string> = ARTIFACT_KINDS[kind].types;
  const type = types[path.extname(file)];
  if (!type) throw new VerbatimError('INTERNAL', `a ${kind} artifact cannot be ${path.basename(file)}`, { hint: `Allowed: ${Object.keys(types).join(', ')}.` });
  return type;
}

/** Which retention period governs an artifact of this kind (unknown kinds: media, the stricter reading). */
export function artifactRetentionClass(kind: string): 'media' | 'transcript' {
  return isArtifactKind(kind) ? ARTIFACT_KINDS[kind].retention : 'media';
}

/** The transcript kind for a transcript file's extension (transcript.json → transcript-json). */
export function transcriptKind(file: string): ArtifactKind {
  const kind = `transcript-${path.extname(file).slice(1)}`;
  if (!isArtifactKind(kind)) throw new VerbatimError('INTERNAL', `no artifact kind for transcript file ${path.basename(file)}`);
  return kind;
}
