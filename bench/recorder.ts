/**
 * `npm run bench -- recorder [--quick]`: the recorder against the usual alternatives,
 * every number measured in the same run on this machine.
 *
 *  1. cpu_ratio_vs_ffmpeg   ffmpeg -c copy per track (SDP input) vs the recorder, same replay
 *  2. max_pps_zero_loss     one recorder worker, stepped packet rates, zero loss + lag p99 ≤ 100 ms
 *  3. memory_per_track_mb   RSS added per recorded track at N tracks of light traffic
 *  4. sfu_tap_overhead_pct  mediasoup worker CPU with the room's recording tap on vs off
 *
 * Load comes from bench/tools/udp-blast.c replaying real Opus / VP8 RTP captured from
 * ffmpeg (bench/lib/udp-blast.ts), with per-track SSRC, payload type, sequence numbers
 * and timestamps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { alive, killNow, onCleanup, sleep, terminate } from './lib/children.ts';
import { CpuMeter, diffCounters, rssBytes, sumDefined, udpCounters } from './lib/proc.ts';
import { BENCH_DATABASE_URL, BENCH_RECORDER_SECRET, dropSchema, endSession, postgresReachable, startBenchRecorder, startTracks, type BenchRecorder, type RecorderTrack } from './lib/recorder-proc.ts';
import { atLeast, atMost, machineInfo, reportOnly, round, type Metric, type SuiteResult } from './lib/results.ts';
import { ensureBlaster, ensureTemplates, freeUdpPort, freeUdpPortPairs, startBlast, type BlastTrack, type TemplateInfo } from './lib/udp-blast.ts';

interface Plan {
  /** Metric 1: tracks, seconds measured, seconds of warm-up before measuring. */
  cpuTracks: number;
  cpuSeconds: number;
  cpuWarmS: number;
  /** Metric 2: target aggregate rates and seconds per step; refine: try the midpoint after the first failure. */
  ppsSteps: number[];
  ppsStepS: number;
  ppsRefine: boolean;
  /** Metric 3: tracks at 1 packet/s each, seconds of traffic before measuring. */
  memTracks: number;
  memTrafficS: number;
  /** Metric 4: publishers (audio + video each), seconds measured per phase, warm-up per phase. */
  sfuPublishers: number;
  sfuSeconds: number;
  sfuWarmS: number;
}

const FULL: Plan = {
  cpuTracks: 100,
  cpuSeconds: 30,
  cpuWarmS: 5,
  ppsSteps: [25_000, 50_000, 100_000, 150_000, 200_000, 250_000, 300_000],
  ppsStepS: 30,
  ppsRefine: true,
  memTracks: 1000,
  memTrafficS: 8,
  sfuPublishers: 10,
  sfuSeconds: 20,
  sfuWarmS: 4,
};

const QUICK: Plan = {
  cpuTracks: 20,
  cpuSeconds: 4,
  cpuWarmS: 2.5,
  ppsSteps: [50_000, 150_000],
  ppsStepS: 5,
  ppsRefine: false,
  memTracks: 200,
  memTrafficS: 3,
  sfuPublishers: 10,
  sfuSeconds: 4,
  sfuWarmS: 2.5,
};

const LAG_GOAL_MS = 100;
const log = (msg: string) => process.stderr.write(`[bench recorder] ${msg}\n`);

/** Track i of a participant mix: audio, video (alternating 720p/360p VP8), audio, ... */
const kindOf = (i: number): 'audio' | 'video' => (i % 2 === 0 ? 'audio' : 'video');
const templateOf = (i: number): string => (i % 2 === 0 ? 'opus48k' : i % 4 === 1 ? 'vp8hi' : 'vp8lo');

export async function runRecorderBench(opts: { quick: boolean }): Promise<SuiteResult> {
  const plan = opts.quick ? QUICK : FULL;
  const started = Date.now();
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  const work = mkdtempSync(path.join(os.tmpdir(), 'verbatim-bench-'));
  onCleanup('bench work dir', async () => rmSync(work, { recursive: true, force: true }), () => rmSync(work, { recursive: true, force: true }));

  ensureBlaster();
  const templates = await ensureTemplates();
  const srcPort = await freeUdpPort();
  log(`templates: ${Object.values(templates).map((t) => `${t.name} ${round(t.pps, 1)} pps ${Math.round(t.meanBytes)} B`).join(', ')}`);

  // The recorder (separate process, one worker) and the SFU (in this process, one
  // mediasoup worker) start side by side; the SFU idles until metric 4.
  const t0 = Date.now();
  const recPort = await freeTcpPort();
  const [rec, sfu] = await Promise.all([
    startBenchRecorder({ RECORDER_PORT: String(recPort), RECORDER_MIN_PORT: '20000', RECORDER_MAX_PORT: '29999', RECORDER_WORKERS: '1' }),
    startBenchSfu(`http://127.0.0.1:${recPort}`),
  ]);
  log(`recorder ${rec.url} and SFU ${sfu.url} up in ${Date.now() - t0} ms`);

  const metrics: Record<string, Metric> = {};
  const details: Record<string, unknown> = { plan, templates: Object.fromEntries(Object.entries(templates).map(([k, t]) => [k, { pps: round(t.pps, 1), meanBytes: Math.round(t.meanBytes), loopS: t.loopS }])) };
  const ctx = { rec, templates, work, srcPort, plan };

  // Each measurement is independent: one failing is reported, the others still run.
  const attempt = async (name: string, fn: () => Promise<void>) => {
    const t = Date.now();
    try {
      await fn();
    } catch (err) {
      log(`${name} failed: ${(err as Error).stack ?? err}`);
      details[`${name}Error`] = (err as Error).message;
    }
    log(`${name} took ${round((Date.now() - t) / 1000, 1)} s`);
  };

  await attempt('memory', async () => {
    const r = await measureMemory(ctx);
    details.memory = r;
    metrics.memory_per_track_mb = atMost(round(r.perTrackMb, 4), 0.2, 'MB', `RSS (supervisor + worker) ${round(r.beforeMb, 1)} → ${round(r.afterMb, 1)} MB for ${r.tracks} tracks at 1 pps; worker ${round(r.workerDeltaMb, 1)} MB, supervisor ${round(r.supervisorDeltaMb, 1)} MB`);
  });

  await attempt('cpu', async () => {
    const f = await measureFfmpegCpu(ctx);
    const r = await measureRecorderCpu(ctx);
    details.cpu = { ffmpeg: f, recorder: r };
    const ratio = f.cpuPerTrackMin / r.cpuPerTrackMin;
    metrics.cpu_ratio_vs_ffmpeg = atLeast(
      round(ratio, 2),
      10,
      'x',
      `${plan.cpuTracks} tracks × ${plan.cpuSeconds} s: ffmpeg ${round(f.cpuPerTrackMin, 4)} CPU-s/track-min (${f.alive}/${plan.cpuTracks} alive), recorder ${round(r.cpuPerTrackMin, 4)} CPU-s/track-min (supervisor ${round(r.supervisorCpuS, 2)} s, worker ${round(r.workerCpuS, 2)} s, stored ${r.stored}/${r.sent} packets)`,
    );
    metrics.ffmpeg_cpu_s_per_track_min = reportOnly(round(f.cpuPerTrackMin, 4), 'CPU-s/track-min');
    metrics.recorder_cpu_s_per_track_min = reportOnly(round(r.cpuPerTrackMin, 4), 'CPU-s/track-min');
  });

  await attempt('sfu-tap', async () => {
    const r = await measureSfuTap(ctx, sfu);
    details.sfuTap = r;
    metrics.sfu_tap_overhead_pct = atMost(
      round(r.overheadPct, 1),
      5,
      '%',
      `mediasoup worker ${round(r.offPct, 2)}% CPU without, ${round(r.onPct, 2)}% with the tap (${plan.sfuPublishers} ingest publishers, ${round(r.ppsIn)} pps in, ${round(r.recorderPps)} pps to the recorder)`,
    );
    metrics.sfu_worker_cpu_pct_recording_off = reportOnly(round(r.offPct, 2), '% of a core');
    metrics.sfu_worker_cpu_pct_recording_on = reportOnly(round(r.onPct, 2), '% of a core');
  });
  await sfu.close();

  await attempt('max-pps', async () => {
    const r = await measureMaxPps(ctx);
    details.maxPps = r;
    const best = r.best;
    const failed = r.steps.find((s) => !s.pass);
    metrics.max_pps_zero_loss = atLeast(
      best ? Math.round(best.achievedPps) : 0,
      150_000,
      'packets/s',
      best
        ? `highest passing step: target ${best.targetPps} pps, ${best.tracks} tracks, ${best.sent} sent = ${best.stored} stored${failed ? `; next step ${failed.targetPps} pps failed: ${failed.reason}` : '; no step failed (generator or step list is the limit)'}`
        : `no step passed; first: ${failed?.reason ?? 'n/a'}`,
    );
    const at = best ?? r.steps[0];
    metrics.lag_p99_ms = atMost(at ? round(at.lagP99Ms, 1) : NaN, LAG_GOAL_MS, 'ms', at ? `worker event-loop delay p99 at ${Math.round(at.achievedPps)} pps (max ${round(at.lagMaxMs, 1)} ms)` : undefined);
  });

  await rec.stop();
  return { suite: 'recorder', machine, startedAt, durationS: round((Date.now() - started) / 1000, 1), quick: opts.quick, metrics, details };
}

// ---------------------------------------------------------------------------------------
interface Ctx {
  rec: BenchRecorder;
  templates: Record<string, TemplateInfo>;
  work: string;
  srcPort: number;
  plan: Plan;
}

let sessionSeq = 0;
const newSession = () => `bench-${Date.now().toString(36)}-${++sessionSeq}`;

function blastTracks(tracks: RecorderTrack[], templateFor: (i: number) => string, pps?: number): BlastTrack[] {
  return tracks.map((t, i) => ({ port: t.rtpPort, ssrc: t.ssrc, payloadType: t.payloadType, template: templateFor(i), ...(pps ? { pps } : {}) }));
}

/** Waits until the worker's stored count stops moving (its sockets are drained). */
async function settle(rec: BenchRecorder): Promise<void> {
  let last = -1;
  for (let i = 0; i < 25; i++) {
    const s = await rec.stats();
    const stored = s.workers.reduce((a, w) => a + w.stored, 0);
    if (stored === last) return;
    last = stored;
    await sleep(250);
  }
}

async function freeTcpPort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

// ---- 3. memory per track ---------------------------------------------------------------
async function measureMemory(ctx: Ctx) {
  const { rec, plan } = ctx;
  const pids = await rec.pids();
  const [sup, worker] = [pids[0]!, pids[1]!];
  await sleep(1000);
  const sample = () => ({ sup: rssBytes(sup) ?? 0, worker: rssBytes(worker) ?? 0 });
  const median = async (n: number) => {
    const xs: { sup: number; worker: number }[] = [];
    for (let i = 0; i < n; i++) {
      xs.push(sample());
      await sleep(200);
    }
    const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    return { sup: med(xs.map((x) => x.sup)), worker: med(xs.map((x) => x.worker)) };
  };
  const before = await median(5);
  const room = 'bench-mem';
  const session = newSession();
  const t = Date.now();
  const tracks = await startTracks(rec, room, session, Array.from({ length: plan.memTracks }, (_, i) => kindOf(i)));
  const registerS = (Date.now() - t) / 1000;
  log(`memory: ${tracks.length} tracks registered in ${round(registerS, 1)} s`);
  const blast = startBlast(ctx.templates, blastTracks(tracks, templateOf, 1), plan.memTrafficS + 2, { workDir: ctx.work, srcPort: ctx.srcPort });
  await sleep(plan.memTrafficS * 1000);
  const after = await median(8);
  const sent = (await blast.done).sent;
  await settle(rec);
  const stats = await rec.stats();
  const stored = stats.workers.reduce((a, w) => a + w.stored, 0);
  const t2 = Date.now();
  await endSession(rec, room, session);
  const endS = (Date.now() - t2) / 1000;
  const MB = 1e6;
  const delta = after.sup + after.worker - (before.sup + before.worker);
  return {
    tracks: tracks.length,
    beforeMb: (before.sup + before.worker) / MB,
    afterMb: (after.sup + after.worker) / MB,
    supervisorDeltaMb: (after.sup - before.sup) / MB,
    workerDeltaMb: (after.worker - before.worker) / MB,
    perTrackMb: delta / MB / tracks.length,
    sent,
    stored,
    registerS: round(registerS, 2),
    endSessionS: round(endS, 2),
  };
}

// ---- 1. CPU: ffmpeg -c copy per track vs the recorder ------------------------------------
function sdpFor(kind: 'audio' | 'video', port: number): string {
  const media = kind === 'audio' ? [`m=audio ${port} RTP/AVP 111`, 'a=rtpmap:111 opus/48000/2'] : [`m=video ${port} RTP/AVP 96`, 'a=rtpmap:96 VP8/90000'];
  return ['v=0', 'o=- 0 0 IN IP4 127.0.0.1', 's=verbatim-bench', 'c=IN IP4 127.0.0.1', 't=0 0', ...media, ''].join('\n');
}

/** True once something holds the UDP port (ffmpeg bound its SDP port). */
async function portTaken(port: number): Promise<boolean> {
  const dgram = await import('node:dgram');
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(true);
    });
    s.bind({ port, address: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(false)));
  });
}

async function measureFfmpegCpu(ctx: Ctx) {
  const { plan } = ctx;
  const n = plan.cpuTracks;
  const dir = path.join(ctx.work, 'ffmpeg');
  rmSync(dir, { recursive: true, force: true });
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  const ports = await freeUdpPortPairs(n, 10_000, 19_999);
  const children: ChildProcess[] = [];
  const release = onCleanup(
    'ffmpeg recorders',
    async () => {
      await Promise.all(children.map((c) => terminate(c, { graceMs: 3000 })));
    },
    () => children.forEach((c) => killNow(c)),
  );
  const outputs: string[] = [];
  const stderrs: string[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const kind = kindOf(i);
      const sdp = path.join(dir, `track${i}.sdp`);
      writeFileSync(sdp, sdpFor(kind, ports[i]!));
      const out = path.join(dir, `track${i}.${kind === 'audio' ? 'ogg' : 'webm'}`);
      outputs.push(out);
      // The usual mediasoup recording recipe: one ffmpeg per consumer, SDP in, stream copy out.
      const c = spawn('ffmpeg', ['-nostdin', '-v', 'error', '-protocol_whitelist', 'file,udp,rtp', '-i', sdp, '-c', 'copy', '-f', kind === 'audio' ? 'ogg' : 'webm', '-y', out], { stdio: ['ignore', 'ignore', 'pipe'] });
      stderrs[i] = '';
      c.stderr!.on('data', (d) => (stderrs[i] = (stderrs[i]! + d).slice(-2000)));
      children.push(c);
    }
    // Every ffmpeg must be listening before the replay starts.
    const deadline = Date.now() + 20_000;
    for (const p of ports) while (!(await portTaken(p)) && Date.now() < deadline) await sleep(50);
    const tracks = ports.map((port, i) => ({ port, ssrc: 0x20000000 + i, payloadType: kindOf(i) === 'audio' ? 111 : 96, template: templateOf(i) }));
    const blast = startBlast(ctx.templates, tracks, plan.cpuWarmS + plan.cpuSeconds + 1, { workDir: ctx.work, seed: 7 });
    await sleep(plan.cpuWarmS * 1000);
    const meter = new CpuMeter(children.map((c) => c.pid!));
    const c0 = meter.read();
    const w0 = Date.now();
    await sleep(plan.cpuSeconds * 1000);
    const c1 = meter.read();
    const wallS = (Date.now() - w0) / 1000;
    const aliveCount = children.filter(alive).length;
    const b = await blast.done;
    await release();
    const bytes = outputs.reduce((a, f) => a + (safeSize(f) ?? 0), 0);
    const empty = outputs.filter((f) => !safeSize(f)).length;
    if (aliveCount < n) log(`ffmpeg: ${n - aliveCount} of ${n} exited early; first error: ${stderrs.find((s, i) => s && !alive(children[i]!))}`);
    const cpuS = c1 - c0;
    return { tracks: n, cpuS: round(cpuS, 3), wallS: round(wallS, 2), cpuPerTrackMin: cpuS / (n * (wallS / 60)), alive: aliveCount, outputBytes: bytes, emptyOutputs: empty, sent: b.sent, pps: round(b.pps) };
  } finally {
    await release();
    rmSync(dir, { recursive: true, force: true });
  }
}

function safeSize(f: string): number | undefined {
  try {
    return statSync(f).size;
  } catch {
    return undefined;
  }
}

async function measureRecorderCpu(ctx: Ctx) {
  const { rec, plan } = ctx;
  const n = plan.cpuTracks;
  const room = 'bench-cpu';
  const session = newSession();
  const tracks = await startTracks(rec, room, session, Array.from({ length: n }, (_, i) => kindOf(i)));
  const s0 = await rec.stats();
  const pids = [s0.supervisor.pid, ...s0.workers.map((w) => w.pid!)];
  const blast = startBlast(ctx.templates, blastTracks(tracks, templateOf), plan.cpuWarmS + plan.cpuSeconds + 1, { workDir: ctx.work, seed: 7, srcPort: ctx.srcPort });
  await sleep(plan.cpuWarmS * 1000);
  const sup = new CpuMeter([pids[0]!]);
  const wk = new CpuMeter(pids.slice(1));
  const [a0, b0] = [sup.read(), wk.read()];
  const w0 = Date.now();
  await sleep(plan.cpuSeconds * 1000);
  const [a1, b1] = [sup.read(), wk.read()];
  const wallS = (Date.now() - w0) / 1000;
  const b = await blast.done;
  await settle(rec);
  const s1 = await rec.stats();
  const stored = s1.workers.reduce((a, w) => a + w.stored, 0) - s0.workers.reduce((a, w) => a + w.stored, 0);
  await endSession(rec, room, session);
  const cpuS = a1 - a0 + (b1 - b0);
  return { tracks: n, supervisorCpuS: a1 - a0, workerCpuS: b1 - b0, cpuS: round(cpuS, 3), wallS: round(wallS, 2), cpuPerTrackMin: cpuS / (n * (wallS / 60)), sent: b.sent, stored, pps: round(b.pps) };
}

// ---- 4. SFU recording tap overhead --------------------------------------------------------
interface BenchSfu {
  url: string;
  admin<T = any>(method: string, p: string, body?: unknown): Promise<T>;
  close(): Promise<void>;
}

/**
 * The SFU the way services/lib/testing/sfu-harness.ts starts it (in this process, one
 * mediasoup worker), tapping recorded rooms into the bench recorder at recorderUrl;
 * its database is Postgres in a private schema when reachable, else PGlite.
 */
async function startBenchSfu(recorderUrl: string): Promise<BenchSfu> {
  const { startTestSfu } = await import('../services/lib/testing/sfu-harness.ts');
  const usePg = await postgresReachable();
  const schema = `bench_sfu_${randomBytes(4).toString('hex')}`;
  const sfu = await startTestSfu({
    overrides: {
      SFU_WORKERS: 1,
      RECORDER_URL: recorderUrl,
      RECORDER_SECRET: BENCH_RECORDER_SECRET,
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      ...(usePg ? { DATABASE_URL: BENCH_DATABASE_URL, DATABASE_SCHEMA: schema } : {}),
    },
  });
  const workerPids = sfu.running.sfu.pool.pids();
  const release = onCleanup(
    'sfu',
    async () => {
      await sfu.close();
      if (usePg) await dropSchema(schema).catch(() => {});
    },
    () => {
      for (const pid of workerPids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    },
  );
  return {
    url: sfu.url,
    async admin<T = any>(method: string, p: string, body?: unknown): Promise<T> {
      const r = await sfu.admin(method, p, body);
      if (r.status >= 300) throw new Error(`SFU ${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as T;
    },
    close: release,
  };
}

async function measureSfuTap(ctx: Ctx, sfu: BenchSfu) {
  const { plan, rec } = ctx;
  const room = `bench-tap-${randomBytes(3).toString('hex')}`;
  await sfu.admin('POST', '/rooms', { id: room });
  const tracks: BlastTrack[] = [];
  for (let i = 0; i < plan.sfuPublishers; i++) {
    const ssrc = 0x30000000 + 2 * i;
    const res = await sfu.admin<{ tracks: { kind: 'audio' | 'video'; rtpPort: number; ssrc: number; payloadType: number }[] }>('POST', `/rooms/${room}/ingest`, {
      identity: `pub${i}`,
      name: `Publisher ${i}`,
      tracks: [
        { kind: 'audio', ssrc, payloadType: 111 },
        { kind: 'video', ssrc: ssrc + 1, payloadType: 96 },
      ],
    });
    for (const t of res.tracks) tracks.push({ port: t.rtpPort, ssrc: t.ssrc, payloadType: t.payloadType, template: t.kind === 'audio' ? 'opus48k' : i % 2 ? 'vp8lo' : 'vp8hi' });
  }
  const workers = (await sfu.admin<{ workers: { pid: number }[] }>('GET', '/workers')).workers;
  if (workers.length !== 1) throw new Error(`expected one mediasoup worker, got ${workers.length}`);
  const meter = new CpuMeter([workers[0]!.pid]);
  const srcPort = await freeUdpPort();
  const blast = startBlast(ctx.templates, tracks, 3600, { workDir: ctx.work, srcPort, seed: 99 });
  const stored = async () => (await rec.stats()).workers.reduce((a, w) => a + w.stored, 0);
  const phase = async () => {
    await sleep(plan.sfuWarmS * 1000);
    const c0 = meter.read();
    const r0 = await stored();
    const t0 = Date.now();
    await sleep(plan.sfuSeconds * 1000);
    const c1 = meter.read();
    const wallS = (Date.now() - t0) / 1000;
    const r1 = await stored();
    return { cpuS: c1 - c0, wallS, pct: ((c1 - c0) / wallS) * 100, recorderPps: (r1 - r0) / wallS };
  };
  try {
    const off = await phase();
    await sfu.admin('PUT', `/rooms/${room}/recording`, { enabled: true });
    // The tap is attached once the recorder holds a track per producer (video starts at its next keyframe, ≤ 2 s).
    const deadline = Date.now() + 15_000;
    while ((await rec.stats()).workers.reduce((a, w) => a + w.tracks, 0) < tracks.length && Date.now() < deadline) await sleep(100);
    const on = await phase();
    const b = await blast.stop();
    const roomStats = await sfu.admin<{ peers: { producers: { stats: { packetCount?: number }[] }[] }[] }>('GET', `/rooms/${room}/stats`);
    const producerPackets = roomStats.peers.flatMap((p) => p.producers).reduce((a, p) => a + (p.stats[0]?.packetCount ?? 0), 0);
    await sfu.admin('PUT', `/rooms/${room}/recording`, { enabled: false }).catch(() => {});
    return {
      publishers: plan.sfuPublishers,
      producers: tracks.length,
      ppsIn: b.pps,
      producerPackets,
      sent: b.sent,
      off: { cpuS: round(off.cpuS, 3), wallS: round(off.wallS, 2), pct: round(off.pct, 2), recorderPps: round(off.recorderPps) },
      on: { cpuS: round(on.cpuS, 3), wallS: round(on.wallS, 2), pct: round(on.pct, 2), recorderPps: round(on.recorderPps) },
      offPct: off.pct,
      onPct: on.pct,
      recorderPps: on.recorderPps,
      overheadPct: ((on.pct - off.pct) / off.pct) * 100,
    };
  } finally {
    if (alive0(blast)) await blast.stop().catch(() => undefined);
  }
}

function alive0(b: { pid: number }): boolean {
  try {
    process.kill(b.pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---- 2. max packets/s with zero loss --------------------------------------------------------
interface PpsStep {
  targetPps: number;
  tracks: number;
  nominalPps: number;
  sent: number;
  achievedPps: number;
  generatorErrors: number;
  generatorLateMaxMs: number;
  received: number;
  stored: number;
  dropped: number;
  kernelRcvbufErrors: number;
  lagP99Ms: number;
  lagMaxMs: number;
  workerCpuPct: number;
  pass: boolean;
  reason: string;
}

async function measureMaxPps(ctx: Ctx) {
  const { rec, plan } = ctx;
  const room = 'bench-pps';
  const session = newSession();
  const tracks: RecorderTrack[] = [];
  const nominal = (count: number) => Array.from({ length: count }, (_, i) => ctx.templates[templateOf(i)]!.pps).reduce((a, x) => a + x, 0);
  const steps: PpsStep[] = [];
  const workerPid = (await rec.pids())[1]!;

  const runStep = async (target: number): Promise<PpsStep> => {
    let count = tracks.length;
    while (nominal(count) < target) count += 2;
    if (count > tracks.length) {
      const t = Date.now();
      tracks.push(...(await startTracks(rec, room, session, Array.from({ length: count - tracks.length }, (_, i) => kindOf(tracks.length + i)))));
      log(`max-pps: ${tracks.length} tracks registered (+${round((Date.now() - t) / 1000, 1)} s)`);
    }
    await sleep(500);
    const s0 = await rec.stats(true);
    const u0 = udpCounters();
    const cpu = new CpuMeter([workerPid]);
    const c0 = cpu.read();
    const blast = startBlast(ctx.templates, blastTracks(tracks, templateOf), plan.ppsStepS, { workDir: ctx.work, srcPort: ctx.srcPort, seed: target });
    const b = await blast.done;
    const c1 = cpu.read();
    await settle(rec);
    const s1 = await rec.stats();
    const u = diffCounters(udpCounters(), u0);
    const sum = (s: typeof s0, f: (w: (typeof s0.workers)[number]) => number) => s.workers.reduce((a, w) => a + f(w), 0);
    const dropSum = (w: (typeof s0.workers)[number]) => Object.values(w.dropped).reduce((a, x) => a + x, 0);
    const stored = sum(s1, (w) => w.stored) - sum(s0, (w) => w.stored);
    const received = sum(s1, (w) => w.received) - sum(s0, (w) => w.received);
    const dropped = sum(s1, dropSum) - sum(s0, dropSum);
    const lag = s1.workers[0]?.lag;
    const step: PpsStep = {
      targetPps: target,
      tracks: tracks.length,
      nominalPps: Math.round(nominal(tracks.length)),
      sent: b.sent,
      achievedPps: b.pps,
      generatorErrors: b.errors,
      generatorLateMaxMs: round(b.late_max_us / 1000, 1),
      received,
      stored,
      dropped,
      kernelRcvbufErrors: u.RcvbufErrors ?? 0,
      lagP99Ms: lag?.p99Ms ?? NaN,
      lagMaxMs: lag?.maxMs ?? NaN,
      workerCpuPct: round(((c1 - c0) / plan.ppsStepS) * 100, 1),
      pass: false,
      reason: '',
    };
    const reasons: string[] = [];
    if (b.errors > 0) reasons.push(`generator send errors ${b.errors}`);
    if (b.pps < 0.95 * target) reasons.push(`generator reached only ${Math.round(b.pps)} pps`);
    if (stored !== b.sent) reasons.push(`lost ${b.sent - stored} of ${b.sent} (${round(((b.sent - stored) / b.sent) * 100, 3)}%; worker received ${received}, kernel RcvbufErrors +${step.kernelRcvbufErrors})`);
    if (dropped > 0) reasons.push(`recorder dropped ${dropped}`);
    if (!(step.lagP99Ms <= LAG_GOAL_MS)) reasons.push(`lag p99 ${round(step.lagP99Ms, 1)} ms > ${LAG_GOAL_MS}`);
    step.pass = reasons.length === 0;
    step.reason = step.pass ? 'ok' : reasons.join('; ');
    log(`max-pps: target ${target}: sent ${b.sent} (${Math.round(b.pps)} pps) stored ${stored} lag p99 ${round(step.lagP99Ms, 1)} ms worker CPU ${step.workerCpuPct}% → ${step.pass ? 'PASS' : `FAIL (${step.reason})`}`);
    steps.push(step);
    return step;
  };

  let best: PpsStep | undefined;
  let failedAt: number | undefined;
  for (const target of plan.ppsSteps) {
    const s = await runStep(target);
    if (!s.pass) {
      failedAt = target;
      break;
    }
    best = s;
  }
  if (plan.ppsRefine && failedAt !== undefined) {
    const lo = best?.targetPps ?? 0;
    const mid = Math.round((lo + failedAt) / 2 / 5000) * 5000;
    if (mid > lo && mid < failedAt) {
      const s = await runStep(mid);
      if (s.pass) best = s;
    }
  }
  return { steps, best };
}

