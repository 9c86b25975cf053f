import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Paths of the native tools scripts/setup.sh built and cached (mediasoup worker...),
 * recorded in .cache/toolchain.json. An explicit environment variable wins.
 */
const toolchainFile = fileURLToPath(new URL('../../.cache/toolchain.json', import.meta.url));

export interface Toolchain {
  mediasoupWorkerBin?: string;
  whisperCliBin?: string;
  recorderRxBin?: string;
}

export function readToolchain(): Toolchain {
  try {
    return JSON.parse(readFileSync(toolchainFile, 'utf8')) as Toolchain;
  } catch {
    return {};
  }
}
