import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { bundleBrowserScript } from '../../lib/browser-bundle.ts';

const webDir = fileURLToPath(new URL('../web/', import.meta.url));

/** Bundles the meeting page client (mediasoup-client included) once at start-up, in memory. */
export async function buildMeetingPage(): Promise<{ html: string; js: string }> {
  const [html, js] = await Promise.all([readFile(`${webDir}meeting.html`, 'utf8'), bundleBrowserScript(`${webDir}meeting.ts`)]);
  return { html, js };
}
