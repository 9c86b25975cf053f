import { VerbatimError } from '../errors.ts';

/**
 * The one storage key scheme. A session's artifacts live under
 * `sessions/<room>/<session>/<name>`, where <name> is the artifact's id within the
 * session (`composite.mp4`, `participants/<p>.mkv`, `tracks/<segment>.ogg`, ...). Every
 * stage builds keys here and the compliance API parses them back here.
 */
const SESSIONS = 'sessions';

export interface ArtifactKeyParts {
  room: string;
  session: string;
  /** The artifact's id within its session: a relative, slash-separated path. */
  name: string;
}

export function sessionArtifactPrefix(room: string, session: string): string {
  return `${SESSIONS}/${room}/${session}/`;
}

export function artifactKey(room: string, session: string, name: string): string {
  if (name === '' || name.startsWith('/')) throw new VerbatimError('BAD_REQUEST', `invalid artifact name "${name}"`, { hint: 'Artifact names are relative paths within the session.' });
  return sessionArtifactPrefix(room, session) + name;
}

/** The parts of a session artifact key; undefined for keys outside the scheme. */
export function parseArtifactKey(key: string): ArtifactKeyParts | undefined {
  const m = /^sessions\/([^/]+)\/([^/]+)\/(.+)$/.exec(key);
  return m ? { room: m[1]!, session: m[2]!, name: m[3]! } : undefined;
}

/**
 * Raw media: the recorder's sealed segment files (`<track>-<n>.vrtp`), uploaded as they are, under
 * `sessions/<room>/<session>/raw/<file>`. They live under the session's prefix like its artifacts,
 * so Object Lock retention and legal holds find them by session; they are not artifacts (no row in
 * `artifacts`): track_segments.stored_key and the manifest's `stored` record them.
 */
export const RAW_NAME_PREFIX = 'raw/';

export function rawSegmentKey(room: string, session: string, file: string): string {
  if (file.includes('/')) throw new VerbatimError('BAD_REQUEST', `invalid raw segment file name "${file}"`, { hint: 'Raw segment keys take the file name of a sealed segment (<track>-<n>.vrtp).' });
  return artifactKey(room, session, RAW_NAME_PREFIX + file);
}

export function rawSegmentPrefix(room: string, session: string): string {
  return sessionArtifactPrefix(room, session) + RAW_NAME_PREFIX;
}

/**
 * The sealed session manifest next to its raw segments, republished whenever the recorder rewrites it
 * (an upload recorded, an erasure): a transcode host that does not share the recorder's disk reads it here.
 */
export function rawManifestKey(room: string, session: string): string {
  return artifactKey(room, session, `${RAW_NAME_PREFIX}manifest.json`);
}

/** Whether a key (or a key's name within its session) is raw media. */
export function isRawSegmentKey(key: string): boolean {
  return parseArtifactKey(key)?.name.startsWith(RAW_NAME_PREFIX) === true;
}
