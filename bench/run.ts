/**
 * Bench dispatcher: `npm run bench -- <suite> [--quick]` (tsx bench/run.ts <suite> [--quick]).
 * Each suite writes bench/results/<suite>.json:
 *   { suite, machine: { cpus, model, node, kernel, ... }, metrics: { <name>: { value, unit, goal, pass } }, ... }
 * (pass is null for report-only metrics) and prints a table. A goal not met is
 * reported as FAIL in the table and the JSON; the exit code is 0 once the suite ran,
 * 1 when it crashed, 2 for usage errors.
 */
import { runCleanups } from './lib/children.ts';
import { formatTable, writeResult, type SuiteResult } from './lib/results.ts';

type Suite = { describe: string; run: (opts: { quick: boolean }) => Promise<SuiteResult> };

const suites: Record<string, Suite> = {
  recorder: {
    describe: 'recorder vs ffmpeg CPU, max packets/s per worker, memory per track, SFU tap overhead',
    run: async (opts) => (await import('./recorder.ts')).runRecorderBench(opts),
  },
  transcode: {
    describe: 'audio post-processing (depacketize, gap fill, AAC, 16 kHz WAV) x realtime per core; A/V mux x realtime',
    run: async (opts) => (await import('./transcode.ts')).runTranscodeBench(opts),
  },
  transcribe: {
    describe: 'VAD work ratio, whisper-cli wrapper overhead, end-to-end latency from meeting end to transcript',
    run: async (opts) => (await import('./transcribe.ts')).runTranscribeBench(opts),
  },
  sfu: {
    describe: 'WebRTC bots against the SFU: consumers per core, 200-join storm p95, largest room, 700-person all-hands projection',
    run: async (opts) => (await import('./sfu.ts')).runSfuBench(opts),
  },
  search: {
    describe: 'transcript search p95 at 1M segments (5 query shapes, Postgres and PGlite), insert rows/s, audit appends/s',
    run: async (opts) => (await import('./search.ts')).runSearchBench(opts),
  },
  supervision: {
    describe: 'supervision policies: backfill s per 1M segments (50-term lexicon + 5 detectors), flag latency p95, review queue p95 at 100k items',
    run: async (opts) => (await import('./supervision.ts')).runSupervisionBench(opts),
  },
};

function usage(): string {
  return ['usage: npm run bench -- <suite> [--quick]', '', 'suites:', ...Object.entries(suites).map(([name, s]) => `  ${name.padEnd(12)} ${s.describe}`)].join('\n');
}

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const unknownFlags = args.filter((a) => a.startsWith('-') && a !== '--quick');
const names = args.filter((a) => !a.startsWith('-'));
const suite = names.length === 1 ? suites[names[0]!] : undefined;
if (!suite || unknownFlags.length > 0) {
  if (names.length === 1 && !suite) process.stderr.write(`unknown suite: ${names[0]}\n\n`);
  if (unknownFlags.length > 0) process.stderr.write(`unknown option: ${unknownFlags.join(' ')}\n\n`);
  process.stderr.write(`${usage()}\n`);
  process.exit(2);
}

let code = 0;
try {
  const result = await suite.run({ quick });
  const file = writeResult(result);
  process.stdout.write(`\n${formatTable(result)}\n\n${quick ? '(quick run: smaller N, shorter steps) ' : ''}took ${result.durationS} s; wrote ${file}\n`);
} catch (err) {
  process.stderr.write(`bench ${names[0]} failed: ${(err as Error).stack ?? String(err)}\n`);
  code = 1;
} finally {
  await runCleanups();
}
process.exit(code);
