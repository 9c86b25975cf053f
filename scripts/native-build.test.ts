import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// The skeleton of the native builds (scripts/lib/native-build.sh), driven through a tiny
// fake build so that nothing here compiles for minutes, and its progress filter fed with
// fake ninja/make output on a fake clock.

const lib = resolve('scripts/lib/native-build.sh');
const scratch = mkdtempSync(join(tmpdir(), 'verbatim-native-build-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

// A recipe like build-*.sh: counts its builds, compiles with ninja-style status lines, and
// fails when FAKE_FAIL is set.
const fakeRecipe = `#!/usr/bin/env bash
set -euo pipefail
source "${lib}"
nb_init fake-tool "$@"
INPUTS_HASH="$(nb_inputs_hash "\${BASH_SOURCE[0]}" "$FAKE_SUPPORT" "\${FAKE_KEY_LINE:-plain}")"
nb_claim_entry fake-tool "1.0.0-$INPUTS_HASH" fake-tool
nb_start_build "fake-tool 1.0.0"
echo built >> "$FAKE_COUNTER"
sleep "\${FAKE_SLEEP:-0}"
nb_step "preparing" echo prepared
OUT="$NB_BUILD_ROOT/fake-tool"
nb_step_progress "compiling" bash -c '
  for i in 1 2 3; do echo "[$i/3] Compiling C++ object obj$i.o"; done
  if [[ -n "\${FAKE_FAIL:-}" ]]; then echo "obj3.cpp:1: error: boom"; exit 3; fi
  printf "#!/bin/sh\\necho fake tool\\n" > "$1" && chmod +x "$1"' compile "$OUT"
nb_install "$OUT"
`;

interface Build {
  dir: string;
  recipe: string;
  support: string;
  env: NodeJS.ProcessEnv;
}

let builds = 0;
function newBuild(): Build {
  const dir = join(scratch, `build-${++builds}`);
  const support = join(dir, 'support');
  mkdirSync(join(support, 'patches'), { recursive: true });
  writeFileSync(join(support, 'patches', 'fix.patch'), 'patch v1\n');
  const recipe = join(dir, 'build-fake.sh');
  writeFileSync(recipe, fakeRecipe);
  chmodSync(recipe, 0o755);
  const env = {
    ...process.env,
    VERBATIM_CACHE_DIR: join(dir, 'cache'),
    VERBATIM_PROGRESS: 'lines',
    FAKE_SUPPORT: support,
    FAKE_COUNTER: join(dir, 'builds'),
  };
  return { dir, recipe, support, env };
}

function run(b: Build, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}) {
  const res = spawnSync('bash', [b.recipe, ...args], { encoding: 'utf8', env: { ...b.env, ...extraEnv } });
  return { status: res.status, stdout: res.stdout, stderr: res.stderr };
}

function runAsync(b: Build, extraEnv: NodeJS.ProcessEnv) {
  return new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
    const child = spawn('bash', [b.recipe], { env: { ...b.env, ...extraEnv } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status) => done({ status, stdout, stderr }));
  });
}

const buildCount = (b: Build) => (existsSync(b.env.FAKE_COUNTER!) ? readFileSync(b.env.FAKE_COUNTER!, 'utf8').split('\n').filter(Boolean).length : 0);
const entryOf = (b: Build, extraEnv: NodeJS.ProcessEnv = {}) => run(b, ['--print-entry'], extraEnv).stdout.trim();

describe('native build skeleton', () => {
  it('builds once into the cache entry, then reuses it silently', () => {
    const b = newBuild();
    const first = run(b);
    expect(first.status).toBe(0);
    const bin = first.stdout.trim();
    // stdout carries only the binary's path; it lives in the entry --print-entry names.
    expect(first.stdout).toBe(`${bin}\n`);
    expect(bin).toBe(join(entryOf(b), 'fake-tool'));
    expect(bin.startsWith(join(b.env.VERBATIM_CACHE_DIR!, 'fake-tool', '1.0.0-'))).toBe(true);
    expect(spawnSync(bin, { encoding: 'utf8' }).stdout).toBe('fake tool\n');
    expect(first.stderr).toContain('[setup] fake-tool: building fake-tool 1.0.0; log: ');
    expect(first.stderr).toMatch(/\[setup\] fake-tool: done in \d+s: /);
    // The whole build output is in the log, kept beside the binary too.
    const log = readFileSync(join(entryOf(b), 'build.log'), 'utf8');
    expect(log).toContain('prepared');
    expect(log).toContain('[3/3] Compiling C++ object obj3.o');
    expect(buildCount(b)).toBe(1);

    const before = statSync(bin);
    const second = run(b);
    expect(second).toEqual({ status: 0, stdout: `${bin}\n`, stderr: '' });
    expect(buildCount(b)).toBe(1);
    const after = statSync(bin);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
  });

  it('concurrent runs build once: the second waits for the first and reuses its binary', async () => {
    const b = newBuild();
    const [one, two] = await Promise.all([runAsync(b, { FAKE_SLEEP: '1' }), runAsync(b, { FAKE_SLEEP: '1' })]);
    expect(one.status).toBe(0);
    expect(two.status).toBe(0);
    expect(one.stdout).toBe(two.stdout);
    expect(buildCount(b)).toBe(1);
    expect(one.stderr + two.stderr).toContain('another build of 1.0.0-');
  });

  it('a failed build installs nothing and shows the tail of its log', () => {
    const b = newBuild();
    const failed = run(b, [], { FAKE_FAIL: '1' });
    expect(failed.status).toBe(3);
    expect(failed.stdout).toBe('');
    expect(failed.stderr).toContain('[setup] fake-tool: build FAILED (exit 3); last lines of ');
    expect(failed.stderr).toContain('obj3.cpp:1: error: boom');
    expect(failed.stderr).toContain('[setup] fake-tool: build dir kept for inspection: ');
    expect(existsSync(join(entryOf(b), 'fake-tool'))).toBe(false);
    // The next run builds again and succeeds.
    const retried = run(b);
    expect(retried.status).toBe(0);
    expect(buildCount(b)).toBe(2);
  });

  it('the cache key changes with the recipe, the support files and their names, and the extra key lines', () => {
    const b = newBuild();
    const base = entryOf(b);
    expect(entryOf(b)).toBe(base);
    expect(entryOf(b, { FAKE_KEY_LINE: 'x86-base' })).not.toBe(base);

    writeFileSync(join(b.support, 'patches', 'fix.patch'), 'patch v2\n');
    const patched = entryOf(b);
    expect(patched).not.toBe(base);
    renameSync(join(b.support, 'patches', 'fix.patch'), join(b.support, 'patches', 'fix2.patch'));
    expect(entryOf(b)).not.toBe(patched);
    renameSync(join(b.support, 'patches', 'fix2.patch'), join(b.support, 'patches', 'fix.patch'));
    writeFileSync(join(b.support, 'patches', 'fix.patch'), 'patch v1\n');
    expect(entryOf(b)).toBe(base);

    writeFileSync(b.recipe, `${fakeRecipe}# a comment\n`);
    expect(entryOf(b)).not.toBe(base);
  });

  it('a recipe listed in NB_RECIPE_ALIASES keeps the key of the script it replaced, and only byte for byte', () => {
    const dir = join(scratch, 'alias');
    mkdirSync(join(dir, 'old'), { recursive: true });
    mkdirSync(join(dir, 'new'), { recursive: true });
    writeFileSync(join(dir, 'old', 'build-x.sh'), 'echo the old script\n');
    writeFileSync(join(dir, 'new', 'build-x.sh'), 'echo the new recipe\n');
    const out = bash(`
      source "${lib}"
      sum() { sha256sum < "$1" | cut -d' ' -f1; }
      NB_RECIPE_ALIASES=("$(sum new/build-x.sh) $(sum old/build-x.sh)")
      nb_inputs_hash old/build-x.sh support v3
      nb_inputs_hash new/build-x.sh support v3
      echo '# edited' >> new/build-x.sh
      nb_inputs_hash new/build-x.sh support v3`, dir);
    const [old, aliased, edited] = out.trim().split('\n');
    expect(old).toMatch(/^[0-9a-f]{12}$/);
    expect(aliased).toBe(old);
    expect(edited).not.toBe(old);
  });

  it('the real build scripts name their cache entries without building anything', () => {
    for (const script of ['scripts/build-mediasoup-worker.sh', 'scripts/build-whisper.sh']) {
      const cache = join(scratch, 'print-entry');
      const res = spawnSync('bash', [script, '--print-entry'], { encoding: 'utf8', env: { ...process.env, VERBATIM_CACHE_DIR: cache } });
      expect(res.status).toBe(0);
      expect(res.stdout).toMatch(new RegExp(`^${cache}/(mediasoup-worker|whisper)/[0-9.]+-[0-9a-f]{12}\\n$`));
      expect(existsSync(cache)).toBe(false);
    }
  });
});

/** Runs a bash snippet with the library sourced by the snippet itself; returns stdout. */
function bash(script: string, cwd = scratch, env: NodeJS.ProcessEnv = {}): string {
  const res = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { encoding: 'utf8', cwd, env: { ...process.env, ...env } });
  expect(res.stderr).toBe('');
  expect(res.status).toBe(0);
  return res.stdout;
}

function progressText(done: number, total: number, elapsed: number, counts = 1): string {
  return bash(`source "${lib}"; nb_progress_text ${done} ${total} ${elapsed} ${counts}; printf '%s' "$NB_PROGRESS_TEXT"`);
}

// Feeds `input` through nb_progress on a clock that advances `step` seconds per reading.
function progress(input: string, mode: 'bar' | 'lines', step: number, columns = 120) {
  const file = join(scratch, `stream-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(file, input);
  const res = spawnSync(
    'bash',
    ['-euo', 'pipefail', '-c', `source "${lib}"; nb_init fake-tool; nb__now() { NB_NOW=$(( \${NB_NOW:-1000} + ${step} )); }; nb_progress < "${file}"`],
    { encoding: 'utf8', env: { ...process.env, VERBATIM_PROGRESS: mode, VERBATIM_PROGRESS_EVERY: '10', COLUMNS: String(columns) } },
  );
  expect(res.status).toBe(0);
  return { stdout: res.stdout, stderr: res.stderr };
}

function ninjaOutput(total: number): string {
  const lines = ["ninja: Entering directory `/tmp/worker/build'"];
  for (let i = 1; i <= total; i++) {
    lines.push(`[${i}/${total}] Compiling C++ object mediasoup-worker.p/src_RTC_Thing${i}.cpp.o`);
    if (i === 7) lines.push('../src/RTC/Thing7.cpp:12:5: warning: unused variable [-Wunused-variable]', '   12 |     int x;');
  }
  lines.push('[setup] not a status line [1/2]');
  return `${lines.join('\n')}\n`;
}

describe('build progress', () => {
  it('formats a percentage, the counts and an estimate from the pace so far', () => {
    // Whole percents, rounded down: 100% only once everything is done.
    expect(progressText(212, 573, 212)).toBe('36% (212/573), ~6 min left');
    expect(progressText(572, 573, 600)).toBe('99% (572/573), under a minute left');
    expect(progressText(0, 573, 0)).toBe('0% (0/573)');
    // Too early for the pace to mean anything.
    expect(progressText(10, 100, 3)).toBe('10% (10/100)');
    expect(progressText(90, 100, 100)).toBe('90% (90/100), under a minute left');
    expect(progressText(573, 573, 600)).toBe('100% (573/573)');
    // make's status lines carry a percentage only.
    expect(progressText(37, 100, 60, 0)).toBe('37%, ~2 min left');
  });

  it('without a terminal: copies the stream unchanged and prints a plain line at most every 10 s', () => {
    const input = ninjaOutput(20);
    const { stdout, stderr } = progress(input, 'lines', 3);
    expect(stdout).toBe(input);
    // Readings at 3, 6, 9 ... s after the start: a line once 10 s have passed since the last.
    expect(stderr.split('\n').filter(Boolean)).toEqual([
      '[setup] fake-tool: 20% (4/20), under a minute left',
      '[setup] fake-tool: 40% (8/20), under a minute left',
      '[setup] fake-tool: 60% (12/20), under a minute left',
      '[setup] fake-tool: 80% (16/20), under a minute left',
      '[setup] fake-tool: 100% (20/20)',
    ]);
  });

  it('estimates the time left in minutes on a long build', () => {
    // One edge a second: 210 edges done after 210 s, 363 to go at that pace.
    const input = ninjaOutput(573).split('\n').filter((l) => !/^\[(\d+)\//.test(l) || Number(/^\[(\d+)\//.exec(l)![1]) <= 210).join('\n');
    const { stderr } = progress(input, 'lines', 1);
    expect(stderr.trim().split('\n').at(-1)).toBe('[setup] fake-tool: 36% (210/573), ~6 min left');
  });

  it('on a terminal: one bar redrawn in place, ended by a newline', () => {
    const { stdout, stderr } = progress(ninjaOutput(20), 'bar', 3);
    expect(stdout).toBe(ninjaOutput(20));
    const frames = stderr.split('\r').filter(Boolean);
    expect(frames).toHaveLength(20);
    expect(frames[9]).toBe('[setup] fake-tool: [###############...............] 50% (10/20), under a minute left\u001b[K');
    expect(frames[19]).toBe('[setup] fake-tool: [##############################] 100% (20/20)\u001b[K\n');
  });

  it('the bar fits the terminal, so that a redraw never wraps onto a new line', () => {
    const visible = (frame: string) => frame.replace('\u001b[K', '').replace('\n', '');
    const narrow = progress(ninjaOutput(573).split('\n').slice(0, 300).join('\n'), 'bar', 1, 80).stderr.split('\r').filter(Boolean);
    expect(narrow.length).toBeGreaterThan(100);
    for (const frame of narrow) expect(visible(frame).length).toBeLessThan(80);
    // 80 columns leave 21 cells next to the prefix and the longest text.
    expect(narrow.at(-1)).toBe('[setup] fake-tool: [##########...........] 51% (297/573), ~5 min left\u001b[K\n');
    // Too narrow for a bar: the text alone.
    const tiny = progress(ninjaOutput(20), 'bar', 3, 40).stderr.split('\r').filter(Boolean);
    expect(tiny[9]).toBe('[setup] fake-tool: 50% (10/20), under a minute left\u001b[K');
  });

  it("reads make's percentages (CMake builds) as well", () => {
    const input = ['[  5%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o', 'gcc noise', '[ 50%] Building CXX object src/whisper.cpp.o', '[100%] Linking CXX executable bin/whisper-cli', ''].join('\n');
    const { stdout, stderr } = progress(input, 'lines', 10);
    expect(stdout).toBe(input);
    expect(stderr.split('\n').filter(Boolean)).toEqual(['[setup] fake-tool: 5%, ~3 min left', '[setup] fake-tool: 50%, under a minute left', '[setup] fake-tool: 100%']);
  });
});
