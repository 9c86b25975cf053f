// ESLint flat config: `npm run lint` (CI runs it from .ci/run, beside `npm run typecheck`).
//
// typescript-eslint's parser needs TypeScript's JavaScript API, which TypeScript 7 (the
// native compiler) does not have. So package.json installs TypeScript 6.0 as `typescript`
// for the linter, and TypeScript 7 as `@typescript/typescript7`, whose `tsc` is the one
// on the PATH: `npm run typecheck` checks with 7 (scripts/typescript-toolchain.test.ts).
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  globalIgnores(['data/', 'bench/results/', 'test-artifacts/', '.cache/']),
  js.configs.recommended,
  // Type-aware: floating and misused promises, throwing non-errors, `any` leaking out of
  // a boundary are the mistakes that matter in these async services.
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
      globals: globals.node,
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // The code's habits (the project's guide):
      // `import type` for what is only a type.
      '@typescript-eslint/consistent-type-imports': 'error',
      eqeqeq: ['error', 'smart'],
      // A deliberately unused name starts with `_`.
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Off: `async` without `await` is deliberate here, where an interface wants a
      // promise (kysely's dialect and migration provider, cleanup hooks): a throw then
      // rejects instead of throwing synchronously, and dropping `async` would change that.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // Production files stay under 600 lines.
    files: ['**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: { 'max-lines': ['error', { max: 600 }] },
  },
  {
    // Services log through pino with room/session/job ids; the CLI talks to a terminal.
    files: ['services/**/*.ts'],
    ignores: ['services/cli/**', 'services/**/*.test.ts', 'services/sfu/web/**', 'services/audit/src/console/client/**'],
    rules: { 'no-console': 'error' },
  },
  {
    // Tests read JSON answers as `any` and check them with expect(): the assertion is the
    // type check there, and typing each answer first would add nothing. The same holds for
    // the harnesses in testing/ that hand those answers to the tests.
    files: ['**/*.test.ts', 'testing/**'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
  {
    // A migration must not be typed against the current schema: Kysely<any> is kysely's
    // documented signature for them.
    files: ['db/migrations/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    files: ['services/sfu/web/**', 'services/audit/src/console/client/**'],
    languageOptions: { globals: globals.browser },
  },
  {
    // Outside tsconfig.json (this file, the worker smoke test): no type information.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
  },
);
