import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// Two TypeScripts are installed (see eslint.config.js): 7, the native compiler, for the type
// check, and 6.0 as `typescript` for typescript-eslint's parser, which needs the JavaScript
// API that 7 lacks. Both ship a `tsc` and npm links whichever it reaches first into
// node_modules/.bin, so this pins the outcome.

describe('TypeScript toolchain', () => {
  it('`tsc`, which `npm run typecheck` runs, is TypeScript 7', () => {
    const version = execFileSync('node_modules/.bin/tsc', ['--version'], { encoding: 'utf8' });
    expect(version).toMatch(/^Version 7\./);
  });

  it("typescript-eslint's parser finds a TypeScript with the JavaScript API and parses our syntax", () => {
    // A child process, so that the type check does not depend on the linter's packages.
    const script = `
      import { parse } from '@typescript-eslint/typescript-estree';
      const ast = parse("import type { A } from './a.ts';\\nexport const b = { c: 1 } satisfies A;\\n");
      console.log(ast.body.map((n) => n.type).join(' '));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(out.trim()).toBe('ImportDeclaration ExportNamedDeclaration');
  });
});
