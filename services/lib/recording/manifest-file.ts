import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ZodError } from 'zod';
import { SessionManifestSchema, type SessionManifest } from '../contracts/recording.ts';
import { VerbatimError } from '../errors.ts';
import { MANIFEST_FILE } from './session-dir.ts';

/** A session directory or a manifest-shaped file (manifest.json, the journal) → the file. */
export function manifestPathOf(dirOrPath: string): string {
  try {
    if (statSync(dirOrPath).isDirectory()) return path.join(dirOrPath, MANIFEST_FILE);
  } catch {
    // not there: taken as the file, so reading it says it is missing
  }
  return dirOrPath;
}

export type ManifestCheck =
  | { ok: true; file: string; manifest: SessionManifest }
  | { ok: false; file: string; reason: 'missing' | 'unreadable'; message: string }
  | { ok: false; file: string; reason: 'schema'; message: string; issues: ZodError['issues'] };

/** Reads and validates a manifest without throwing: what is wrong, for tools that report every problem. */
export function checkManifest(dirOrPath: string): ManifestCheck {
  const file = manifestPathOf(dirOrPath);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, file, reason: code === 'ENOENT' ? 'missing' : 'unreadable', message: code ?? (err as Error).message };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { ok: false, file, reason: 'unreadable', message: `not valid JSON: ${(err as Error).message}` };
  }
  const r = SessionManifestSchema.safeParse(raw);
  if (!r.success) return { ok: false, file, reason: 'schema', message: r.error.message, issues: r.error.issues };
  return { ok: true, file, manifest: r.data };
}

/** Reads and validates a session manifest; missing, unreadable or invalid → CORRUPT_MANIFEST. */
export function readManifest(dirOrPath: string): SessionManifest {
  const c = checkManifest(dirOrPath);
  if (c.ok) return c.manifest;
  throw new VerbatimError('CORRUPT_MANIFEST', `manifest ${c.file} is unreadable: ${c.message}`, {
    hint: 'Run `verbatim recording verify <session dir>`; the raw files are kept for forensic recovery.',
    details: { file: c.file, reason: c.reason },
  });
}

/** Manifests as the recorder writes them: validated, two-space JSON; the SHA-256 is of exactly these bytes. */
export function writeManifestFile(file: string, manifest: SessionManifest): { path: string; sha256: string } {
  const json = JSON.stringify(SessionManifestSchema.parse(manifest), null, 2);
  writeFileAtomic(file, json);
  return { path: file, sha256: createHash('sha256').update(json).digest('hex') };
}

/** Writes `<dir>/manifest.json` (see writeManifestFile). */
export function writeSessionManifest(dir: string, manifest: SessionManifest): { path: string; sha256: string } {
  return writeManifestFile(path.join(dir, MANIFEST_FILE), manifest);
}

/**
 * tmp + fsync + rename + fsync of the directory: a crash leaves the old or the new file,
 * never half of one, and a rename that returned survives a power cut.
 */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const dirFd = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}
