import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** One measured number. pass is null for report-only metrics. */
export interface Metric {
  value: number;
  unit: string;
  goal: string;
  pass: boolean | null;
  /** Free-form context: what limited it, the raw inputs of a ratio, ... */
  notes?: string;
}

export interface SuiteResult {
  suite: string;
  machine: MachineInfo;
  startedAt: string;
  durationS: number;
  quick: boolean;
  metrics: Record<string, Metric>;
  /** Raw measurements behind the metrics (per-step tables, samples). */
  details?: Record<string, unknown>;
}

export interface MachineInfo {
  cpus: number;
  model: string;
  node: string;
  kernel: string;
  memTotalMb: number;
  loadAvg: number[];
  hostname: string;
  ffmpeg?: string;
}

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const resultsDir = path.join(repoRoot, 'bench', 'results');
export const cacheDir = path.join(repoRoot, '.cache', 'bench');

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  let ffmpeg: string | undefined;
  try {
    ffmpeg = execFileSync('ffmpeg', ['-version'], { encoding: 'utf8' }).split('\n')[0]?.replace(/ Copyright.*$/, '');
  } catch {
    ffmpeg = undefined;
  }
  return {
    cpus: cpus.length,
    model: cpus[0]?.model ?? 'unknown',
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    memTotalMb: Math.round(os.totalmem() / 1048576),
    loadAvg: os.loadavg().map((x) => round(x, 2)),
    hostname: os.hostname(),
    ...(ffmpeg ? { ffmpeg } : {}),
  };
}

/** A metric whose goal is "value >= min" (or "<=" max). NaN / missing values fail. */
export function atLeast(value: number, min: number, unit: string, notes?: string): Metric {
  return { value, unit, goal: `>= ${min}`, pass: Number.isFinite(value) && value >= min, ...(notes ? { notes } : {}) };
}
export function atMost(value: number, max: number, unit: string, notes?: string): Metric {
  return { value, unit, goal: `<= ${max}`, pass: Number.isFinite(value) && value <= max, ...(notes ? { notes } : {}) };
}
export function reportOnly(value: number, unit: string, notes?: string): Metric {
  return { value, unit, goal: 'report', pass: null, ...(notes ? { notes } : {}) };
}

export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Writes bench/results/<suite>.json atomically; JSON has no NaN/Infinity, so they become null. */
export function writeResult(result: SuiteResult, dir = resultsDir): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${result.suite}.json`);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(result, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
  renameSync(tmp, file);
  return file;
}

export function readResult(suite: string, dir = resultsDir): SuiteResult {
  return JSON.parse(readFileSync(path.join(dir, `${suite}.json`), 'utf8')) as SuiteResult;
}

/** A plain-text table of a suite's metrics. */
export function formatTable(result: Pick<SuiteResult, 'suite' | 'metrics'>): string {
  const rows = Object.entries(result.metrics).map(([name, m]) => [
    name,
    formatNumber(m.value),
    m.unit,
    m.goal,
    m.pass === null ? '-' : m.pass ? 'PASS' : 'FAIL',
  ]);
  const header = ['metric', 'value', 'unit', 'goal', 'result'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const notes = Object.entries(result.metrics)
    .filter(([, m]) => m.notes)
    .map(([name, m]) => `  ${name}: ${m.notes}`);
  return [`suite: ${result.suite}`, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line), ...(notes.length ? ['', 'notes:', ...notes] : [])].join('\n');
}

export function formatNumber(x: number): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  if (Number.isInteger(x)) return String(x);
  const abs = Math.abs(x);
  return x.toFixed(abs >= 100 ? 1 : abs >= 1 ? 2 : 4);
}

/**
 * Runs each measurement on its own: one that throws is logged and recorded in
 * `details` as `<name>Error`, and the suite goes on with the others.
 */
export function measurementRunner(details: Record<string, unknown>, log: (msg: string) => void) {
  return async (name: string, fn: () => Promise<void>): Promise<void> => {
    const t = Date.now();
    try {
      await fn();
    } catch (err) {
      log(`${name} failed: ${(err as Error).stack ?? String(err)}`);
      details[`${name}Error`] = (err as Error).message;
    }
    log(`${name} took ${round((Date.now() - t) / 1000, 1)} s`);
  };
}
