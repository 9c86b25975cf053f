import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { onCleanup, sleep } from './children.ts';
import { BENCH_DATABASE_URL, dropSchema, postgresReachable } from './recorder-proc.ts';
import { round } from './results.ts';

const CLUSTER_SECRET = 'bench-cluster-secret-0123456789';

export interface CascadeLatency {
  /** Median of (arrival via the second host − arrival from the origin) over the same packets. */
  addedMs: number;
  p95Ms: number;
  matched: number;
  /** Where the second host ran: 'netns' (its own SFU process behind a veth pair) or 'in-process'. */
  topology: string;
}

/** Start of an RTP packet's payload (after CSRCs and the header extension). */
function payloadOffset(p: Buffer): number {
  let off = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) off += 4 + 4 * p.readUInt16BE(off + 2);
  return off;
}

interface Arrival {
  ts: number;
  at: number;
  key: string;
}

/**
 * cascade_added_latency_ms: one speaker on the origin host; one viewer on the origin and one on a
 * second host that pipes the room from the origin (services/sfu cascade). Both viewers run in
 * this process, so their clocks are one: for each audio packet both receive, the difference of
 * arrival times is what the second host adds. The packets are matched by RTP timestamp: each
 * consumer rewrites it by a constant offset, found from the payloads that occur once.
 * The second host is the real SFU process in a network namespace where that can be made and
 * Postgres is there (they share the room registry); else a second SFU in this process on loopback.
 */
export interface CascadeHosts {
  originUrl: string;
  edgeUrl: string;
  topology: string;
  admin: (method: string, p: string, body?: unknown) => Promise<{ status: number; body: unknown }>;
  cleanups: (() => Promise<void>)[];
  close(): Promise<void>;
}

/** The two hosts, started early (they idle until measured, so their start-up is not in the suite's run time). */
export async function startCascadeHosts(): Promise<CascadeHosts> {
  const { netnsUnavailable, createNetns, tcpForward } = await import('../../testing/netns.ts');
  const { startTestSfu } = await import('../../testing/sfu-harness.ts');
  const { startSfuHostProcess } = await import('../../testing/sfu-host-process.ts');
  const { openDatabase } = await import('../../db/database.ts');
  const cleanups: (() => Promise<void>)[] = [];
  const release = onCleanup('cascade hosts', async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
  });
  try {
    const noNetns = await netnsUnavailable();
    const pg = await postgresReachable();
    const cluster = { SFU_CLUSTER_SECRET: CLUSTER_SECRET, SFU_HEARTBEAT_MS: 1000, SFU_WORKERS: 1, LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn' };
    let originUrl: string;
    let edgeUrl: string;
    let topology: string;
    let admin: CascadeHosts['admin'];
    if (!noNetns && pg) {
      const schema = `bench_cascade_${randomBytes(4).toString('hex')}`;
      const ns = await createNetns();
      cleanups.push(() => ns.delete());
      const proxy = await tcpForward(ns.hostAddress, 0, { host: '127.0.0.1', port: Number(new URL(BENCH_DATABASE_URL).port || 5432) });
      cleanups.push(() => proxy.close());
      const db = await openDatabase({ url: BENCH_DATABASE_URL, schema });
      cleanups.push(async () => {
        await db.destroy();
        await dropSchema(schema);
      });
      const origin = await startTestSfu({ db, overrides: { ...cluster, SFU_HOST: ns.hostAddress, SFU_RTC_LISTEN_IP: ns.hostAddress, SFU_HOST_ID: 'origin' } });
      cleanups.push(() => origin.close());
      const dbUrl = new URL(BENCH_DATABASE_URL);
      dbUrl.hostname = ns.hostAddress;
      dbUrl.port = String(proxy.port);
      const edge = await startSfuHostProcess({
        spawn: ns.spawn,
        address: ns.nsAddress,
        port: 8080,
        env: { DATABASE_URL: dbUrl.toString(), DATABASE_SCHEMA: schema, SFU_HOST_ID: 'edge', SFU_CLUSTER_SECRET: CLUSTER_SECRET, SFU_HEARTBEAT_MS: '1000', LOG_LEVEL: 'warn' },
      });
      cleanups.push(() => edge.stop());
      originUrl = origin.url;
      edgeUrl = edge.url;
      admin = origin.admin.bind(origin);
      topology = `netns: second host is its own SFU process in namespace ${ns.name} (${ns.nsAddress}), origin on ${ns.hostAddress}; Postgres through a TCP forwarder`;
    } else {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-cascade-'));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      const db = await openDatabase({ pgliteDir: path.join(dir, 'db') });
      cleanups.push(() => db.destroy());
      const origin = await startTestSfu({ db, overrides: { ...cluster, SFU_HOST_ID: 'origin' } });
      cleanups.push(() => origin.close());
      const edge = await startTestSfu({ db, overrides: { ...cluster, SFU_HOST_ID: 'edge' } });
      cleanups.push(() => edge.close());
      originUrl = origin.url;
      edgeUrl = edge.url;
      admin = origin.admin.bind(origin);
      topology = `in-process on loopback (${noNetns ?? 'Postgres not reachable for a second process'})`;
    }
    return { originUrl, edgeUrl, topology, admin, cleanups, close: release };
  } catch (err) {
    await release();
    throw err;
  }
}

export async function measureCascadeLatency(hosts: CascadeHosts, windowS: number): Promise<CascadeLatency> {
  const { Bot } = await import('../../testing/bots/bot.ts');
  const { originUrl, edgeUrl, topology, admin, cleanups } = hosts;
  try {
    const token = async (identity: string) => ((await admin('POST', '/rooms/cascade-bench/tokens', { identity, name: identity })).body as { token: string }).token;
    await admin('POST', '/rooms', { id: 'cascade-bench', name: 'Cascade bench' });
    const speaker = await Bot.join(originUrl, await token('speaker'), 'speaker', { publish: true, consume: false, kinds: ['audio'] });
    cleanups.push(async () => speaker.close());
    const arrivals = { origin: [] as Arrival[], edge: [] as Arrival[] };
    let recording = false;
    const viewer = async (where: 'origin' | 'edge') => {
      const b = await Bot.join(where === 'origin' ? originUrl : edgeUrl, await token(`viewer-${where}`), `viewer-${where}`, {
        kinds: ['audio'],
        onRtp: (_c, p, at) => {
          if (recording) arrivals[where].push({ ts: p.readUInt32BE(4), at, key: p.subarray(payloadOffset(p)).toString('base64') });
        },
      });
      cleanups.push(async () => b.close());
    };
    await viewer('origin');
    await viewer('edge');
    await sleep(1000);
    recording = true;
    await sleep(windowS * 1000);
    recording = false;
    // The timestamp offset between the two consumers, from payloads that occur once in each.
    const once = (xs: Arrival[]) => {
      const n = new Map<string, Arrival[]>();
      for (const x of xs) n.set(x.key, [...(n.get(x.key) ?? []), x]);
      return new Map([...n].filter(([, v]) => v.length === 1).map(([k, v]) => [k, v[0]!]));
    };
    const uo = once(arrivals.origin);
    const votes = new Map<number, number>();
    for (const [k, e] of once(arrivals.edge)) {
      const o = uo.get(k);
      if (o) votes.set((e.ts - o.ts) >>> 0, (votes.get((e.ts - o.ts) >>> 0) ?? 0) + 1);
    }
    const offset = [...votes].sort((a, b) => b[1] - a[1])[0]?.[0];
    const byTs = new Map(arrivals.origin.map((o) => [o.ts, o.at]));
    const deltas = offset === undefined ? [] : arrivals.edge.flatMap((e) => (byTs.has((e.ts - offset) >>> 0) ? [e.at - byTs.get((e.ts - offset) >>> 0)!] : [])).sort((a, b) => a - b);
    const q = (p: number) => (deltas.length ? deltas[Math.min(deltas.length - 1, Math.ceil((p / 100) * deltas.length) - 1)]! : NaN);
    return { addedMs: round(q(50), 2), p95Ms: round(q(95), 2), matched: deltas.length, topology };
  } finally {
    await hosts.close();
  }
}
