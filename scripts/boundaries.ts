import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * The architecture rule as code: services meet only at their contracts and services/lib.
 * - a file under services/<a>/ never imports services/<b>/src/… (b ≠ a): it uses services/<b>/index.ts;
 * - services/lib imports no service (nor, outside its tests, the test support in testing/).
 * Tests count too: a test that needs another service uses that service's index.ts.
 */
export interface BoundaryViolation {
  file: string;
  line: number;
  specifier: string;
  rule: 'deep-import' | 'lib-imports-service';
}

const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g;

export function findBoundaryViolations(root: string): BoundaryViolation[] {
  const out: BoundaryViolation[] = [];
  const servicesDir = path.join(root, 'services');
  for (const file of walk(servicesDir)) {
    const rel = path.relative(root, file).split(path.sep);
    const owner = rel[1]!;
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = m[1]!;
      if (!spec.startsWith('.')) continue;
      const target = path.relative(root, path.resolve(path.dirname(file), spec)).split(path.sep);
      const line = text.slice(0, m.index).split('\n').length;
      const where = { file: rel.join('/'), line, specifier: spec };
      if (owner === 'lib') {
        const intoService = target[0] === 'services' && target[1] !== 'lib';
        // Tests of lib may use the shared fixtures in testing/; lib itself may not.
        const intoTesting = target[0] === 'testing' && !/\.test\.ts$/.test(file);
        if (intoService || intoTesting) out.push({ ...where, rule: 'lib-imports-service' });
      } else if (target[0] === 'services' && target[1] !== owner && target[1] !== 'lib' && target[2] === 'src') {
        out.push({ ...where, rule: 'deep-import' });
      }
    }
  }
  return out;
}

function* walk(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name === 'node_modules' || e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (/\.(ts|mts|js|mjs)$/.test(e.name)) yield p;
  }
}
