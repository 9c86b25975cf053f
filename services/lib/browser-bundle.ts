import { build } from 'esbuild';

/**
 * Bundles one browser entry point (TypeScript, its imports included) in memory: the meeting
 * page and the console are served from memory, so nothing is written next to the sources and
 * no build step precedes `npm start`.
 */
export async function bundleBrowserScript(entry: string): Promise<string> {
  const out = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'chrome110',
    minify: true,
    sourcemap: false,
    logLevel: 'silent',
  });
  return out.outputFiles[0]!.text;
}
