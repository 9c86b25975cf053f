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
