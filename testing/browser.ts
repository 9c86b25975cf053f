import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Debian's headless Chromium with fake capture devices fed from files. Background
 * networking is off: this machine has no internet and Chromium would retry forever.
 */
export async function launchChromium(opts: { video?: string; audio?: string; handleSignals?: boolean } = {}): Promise<Browser> {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
    '--autoplay-policy=no-user-gesture-required',
    '--allow-loopback-in-peer-connection',
    ...(opts.video ? [`--use-file-for-fake-video-capture=${opts.video}`] : []),
    ...(opts.audio ? [`--use-file-for-fake-audio-capture=${opts.audio}`] : []),
  ];
  // handleSignals: false leaves Ctrl-C to the caller (Playwright's own handler exits the process with 130).
  const signals = opts.handleSignals === false ? { handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false } : {};
  return chromium.launch({ executablePath: CHROMIUM_PATH, args, headless: true, ...signals, env: { ...process.env, HOME: mkdtempSync(path.join(os.tmpdir(), 'verbatim-chromium-home-')) } });
}
