import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findBoundaryViolations } from './boundaries.ts';

const repo = path.resolve(import.meta.dirname, '..');

describe('service boundaries', () => {
  it('no file under services/<a>/ imports services/<b>/src/, and lib imports no service', () => {
    const found = findBoundaryViolations(repo).map((v) => `${v.file}:${v.line} ${v.rule} ${v.specifier}`);
    expect(found).toEqual([]);
  });

  const tmp = mkdtempSync(path.join(tmpdir(), 'verbatim-boundaries-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const file = (rel: string, body: string) => {
    mkdirSync(path.dirname(path.join(tmp, rel)), { recursive: true });
    writeFileSync(path.join(tmp, rel), body);
  };

  it('names a deliberately added deep import, a dynamic one, and lib reaching into a service', () => {
    file('services/transcode/src/ok.ts', "import { a } from './own.ts';\nimport { b } from '../../lib/rtp/index.ts';\nimport { c } from '../../recorder/index.ts';\n");
    file('services/audit/src/bad.ts', "import x from 'node:fs';\n\nimport { TranscodeWorker } from '../../transcode/src/transcode-worker.ts';\n");
    file('services/sfu/test/bad.test.ts', "const m = await import('../../audit/src/audit-log.ts');\n");
    file('services/lib/storage/bad.ts', "export { startSfu } from '../../sfu/index.ts';\n");
    file('services/lib/media/bad.ts', "import { harness } from '../../../testing/sfu-harness.ts';\n");
    const found = findBoundaryViolations(tmp);
    expect(found).toEqual(
      expect.arrayContaining([
        { file: 'services/audit/src/bad.ts', line: 3, specifier: '../../transcode/src/transcode-worker.ts', rule: 'deep-import' },
        { file: 'services/sfu/test/bad.test.ts', line: 1, specifier: '../../audit/src/audit-log.ts', rule: 'deep-import' },
        { file: 'services/lib/storage/bad.ts', line: 1, specifier: '../../sfu/index.ts', rule: 'lib-imports-service' },
        { file: 'services/lib/media/bad.ts', line: 1, specifier: '../../../testing/sfu-harness.ts', rule: 'lib-imports-service' },
      ]),
    );
    expect(found).toHaveLength(4);
  });
});
