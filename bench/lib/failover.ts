import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { sql } from 'kysely';
import { openDatabase } from '../../db/database.ts';
import { parseRecording, RecordType } from '../../services/lib/recording/vrtp-format.ts';
import { mediaClips, RtpSender } from '../../testing/bots/rtp-sender.ts';
import { onCleanup, sleep } from './children.ts';
import { BENCH_DATABASE_URL, BENCH_RECORDER_SECRET, postgresReachable, startBenchRecorder, type BenchRecorder } from './recorder-proc.ts';
import { atMost, type Metric } from './results.ts';

const FAILOVER_GOAL_MS = 2000;

/** The suite's failover_gap_ms: the worst of `trials` kill -9 failovers (details.failover has each). */
export async function failoverMetrics(trials: number, details: Record<string, unknown>, log: (m: string) => void): Promise<Record<string, Metric>> {
  if (!(await postgresReachable())) throw new Error('needs Postgres: the recorder registry is shared between processes');
  const r = await measureFailover({ trials, log });
  details.failover = r;
  const worst = Math.max(...r.trials.map((t) => t.gapMs));
  return {
    failover_gap_ms: atMost(worst, FAILOVER_GOAL_MS, 'ms', `worst of ${r.trials.length} kill -9 trials (${r.trials.map((t) => t.gapMs).join(', ')} ms; RECORDER_DEAD_AFTER_MS=${r.deadAfterMs}, detection by the failed health check or the stale heartbeat)`),
  };
}

export interface FailoverTrial {
  /** kill -9 of the recorder holding the track → first packet of it stored on another (its kernel arrival time). */
  gapMs: number;
  /** kill -9 → the SFU's tap placed on another recorder. */
  retapMs: number;
  from: string;
  to: string;
}

/**
 * failover_gap_ms (issue 15): an SFU discovering a pool of recorders in the registry (a shared
 * Postgres schema), one ingested publisher (Opus RTP at its own pace), and `trials` times the
 * recorder holding its track is killed with -9; the time to the first packet of that track
 * stored by another recorder is the gap. A fresh recorder joins the pool after each kill, so
 * every trial has a survivor. Needs Postgres (the registry is shared between processes).
 */
export async function measureFailover(opts: { trials: number; deadAfterMs?: number; log: (m: string) => void }): Promise<{ trials: FailoverTrial[]; deadAfterMs: number }> {
  const deadAfterMs = opts.deadAfterMs ?? 1500;
  const schema = `bench_pool_${randomBytes(4).toString('hex')}`;
  const db = await openDatabase({ url: BENCH_DATABASE_URL, schema });
  const dropDb = onCleanup('failover schema', async () => {
    await sql`drop schema if exists ${sql.id(schema)} cascade`.execute(db).catch(() => {});
    await db.destroy();
  });
  let n = 0;
  const recorders = new Map<string, BenchRecorder>();
  const startOne = async () => {
    const id = `bench-pool-${++n}`;
    const base = 46000 + n * 500;
    const rec = await startBenchRecorder({ DATABASE_URL: BENCH_DATABASE_URL, DATABASE_SCHEMA: schema, RECORDER_ID: id, RECORDER_MIN_PORT: String(base), RECORDER_MAX_PORT: String(base + 499) });
    recorders.set(id, rec);
    return id;
  };
  await Promise.all([startOne(), startOne()]);
  const { startTestSfu } = await import('../../testing/sfu-harness.ts');
  const sfu = await startTestSfu({ db, overrides: { SFU_WORKERS: 1, RECORDER_DISCOVERY: 'registry', RECORDER_SECRET: BENCH_RECORDER_SECRET, RECORDER_DEAD_AFTER_MS: deadAfterMs, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn' } });
  const sock = dgram.createSocket('udp4');
  let sender: RtpSender | undefined;
  try {
    const pool = sfu.running.sfu.recorders!;
    const waitFor = async (ok: () => boolean, ms: number, what: string) => {
      const end = Date.now() + ms;
      while (!ok()) {
        if (Date.now() > end) throw new Error(`timed out: ${what}`);
        await sleep(10);
      }
    };
    await waitFor(() => pool.list().filter((m) => m.alive).length >= 2, 15_000, 'two live recorders in the pool');
    const room = `failover-${randomBytes(3).toString('hex')}`;
    await sfu.admin('POST', '/rooms', { id: room, flags: { record: true } });
    const res = await sfu.admin('POST', `/rooms/${room}/ingest`, { identity: 'pub', name: 'Publisher', tracks: [{ kind: 'audio', ssrc: 424242, payloadType: 100 }] });
    const to = (res.body as { tracks: { ip: string; rtpPort: number }[] }).tracks[0]!;
    sender = new RtpSender(mediaClips().audio, 100, 424242, (p) => sock.send(p, to.rtpPort, to.ip));
    sender.start();
    const holder = () => sfu.running.sfu.taps.get(room)?.placements()[0]?.recorder;
    await waitFor(() => holder() !== undefined, 10_000, 'the track tapped');
    const trials: FailoverTrial[] = [];
    for (let i = 0; i < opts.trials; i++) {
      await sleep(1000);
      const from = holder()!;
      const killedAtUs = Date.now() * 1000;
      await recorders.get(from)!.kill();
      recorders.delete(from);
      await waitFor(() => holder() !== undefined && holder() !== from, 10_000, 'the track re-tapped');
      const retapMs = Date.now() - killedAtUs / 1000;
      const dest = holder()!;
      const firstUs = await firstStoredAfter(recorders.get(dest)!.dataDir, room, killedAtUs, 5000);
      const trial = { gapMs: Math.round((firstUs - killedAtUs) / 1000), retapMs: Math.round(retapMs), from, to: dest };
      opts.log(`failover ${i + 1}/${opts.trials}: ${from} killed → ${dest}: first packet stored after ${trial.gapMs} ms (re-tapped after ${trial.retapMs} ms)`);
      trials.push(trial);
      if (i + 1 < opts.trials) {
        await startOne();
        await waitFor(() => pool.list().filter((m) => m.alive).length >= 2, 15_000, 'a second live recorder');
      }
    }
    return { trials, deadAfterMs };
  } finally {
    sender?.stop();
    sock.close();
    await sfu.close();
    for (const r of recorders.values()) await r.kill();
    await dropDb();
  }
}

/** The earliest arrival (µs) of an RTP record after `afterUs` in any segment of the room under a recorder's data dir. */
async function firstStoredAfter(dataDir: string, room: string, afterUs: number, timeoutMs: number): Promise<number> {
  const roomDir = path.join(dataDir, 'recordings', room);
  const end = Date.now() + timeoutMs;
  for (;;) {
    let best = Infinity;
    if (existsSync(roomDir)) {
      for (const s of readdirSync(roomDir)) {
        for (const f of readdirSync(path.join(roomDir, s))) {
          if (!/\.vrtp(\.part)?$/.test(f)) continue;
          try {
            const parsed = parseRecording(readFileSync(path.join(roomDir, s, f)), f);
            for (const r of parsed.records) if (r.type === RecordType.RTP && r.arrivalUs > afterUs && r.arrivalUs < best) best = r.arrivalUs;
          } catch {
            // header not written yet
          }
        }
      }
    }
    if (best < Infinity) return best;
    if (Date.now() > end) throw new Error('no packet stored on the other recorder');
    await sleep(20);
  }
}
