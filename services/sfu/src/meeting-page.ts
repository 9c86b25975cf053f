import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const webDir = fileURLToPath(new URL('../web/', import.meta.url));

/** Bundles the meeting page client (mediasoup-client included) once at start-up, in memory. */
export async function buildMeetingPage(): Promise<{ html: string; js: string }> {
  const [html, bundle] = await Promise.all([
    readFile(`${webDir}meeting.html`, 'utf8'),
    build({
      entryPoints: [`${webDir}meeting.ts`],
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'browser',
      target: 'chrome110',
      minify: true,
      sourcemap: false,
      logLevel: 'silent',
    }),
  ]);
  return { html, js: bundle.outputFiles[0]!.text };
}
