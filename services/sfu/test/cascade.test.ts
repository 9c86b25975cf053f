import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { Bot } from '../../../testing/bots/bot.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { createNetns, netnsUnavailable, tcpForward, type Netns } from '../../../testing/netns.ts';
import { stopChild } from '../../../testing/processes.ts';
import { startTestSfu, TEST_API_SECRET, TEST_TOKEN_SECRET, type TestSfu } from '../../../testing/sfu-harness.ts';

/**
 * A room over several hosts: the origin SFU runs here, a second SFU host runs as its own process
 * in a network namespace (198.18.0.0/15, made and deleted by this test), and both share the room
 * registry in Postgres. Postgres listens on 127.0.0.1 only, so the host in the namespace reaches
 * it through a TCP forwarder this test runs on the root namespace's veth address.
 */
const CLUSTER_SECRET = 'test-cluster-secret-0123456789';
const EDGE_PORT = 8080;
const unavailable = await netnsUnavailable();
const [, pgBackend] = await testBackends();
const skipReason = unavailable ?? (pgBackend!.available ? undefined : 'Postgres is not reachable (the room registry is shared through it)');

let ns: Netns;
let proxy: Awaited<ReturnType<typeof tcpForward>>;
let backend: TestBackend;
let db: Db;
let origin: TestSfu;
let edge: ChildProcess | undefined;
let edgeLog = '';
let edgeDataDir: string;
const edgeUrl = () => `http://${ns.nsAddress}:${EDGE_PORT}`;

async function edgeAdmin(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${edgeUrl()}/api/v1${p}`, { method, headers: { authorization: `Bearer ${TEST_API_SECRET}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

describe.skipIf(skipReason !== undefined)(`a room over several hosts (cascading)${skipReason ? ` — skipped: ${skipReason}` : ''}`, () => {
  beforeAll(async () => {
    ns = await createNetns();
    proxy = await tcpForward(ns.hostAddress, 0, { host: '127.0.0.1', port: 5432 });
    backend = pgBackend!;
    db = await backend.open();
    const cluster = { SFU_CLUSTER_SECRET: CLUSTER_SECRET, SFU_HEARTBEAT_MS: 500 };
    // The origin takes 2 participants (its speakers): join links then send viewers to the other host.
    origin = await startTestSfu({ db, overrides: { ...cluster, SFU_HOST: ns.hostAddress, SFU_RTC_LISTEN_IP: ns.hostAddress, SFU_HOST_ID: 'origin', SFU_HOST_CAPACITY: 2 } });
    edgeDataDir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-edge-'));
    const dbUrl = new URL(backend.dbOptions.url!);
    dbUrl.hostname = ns.hostAddress;
    dbUrl.port = String(proxy.port);
    edge = ns.spawn(process.execPath, ['--import', 'tsx', 'services/sfu/src/process.ts'], {
      env: {
        PATH: process.env.PATH,
        DATABASE_URL: dbUrl.toString(),
        DATABASE_SCHEMA: backend.dbOptions.schema,
        DATA_DIR: edgeDataDir,
        SFU_HOST: ns.nsAddress,
        SFU_PORT: String(EDGE_PORT),
        SFU_RTC_LISTEN_IP: ns.nsAddress,
        SFU_WORKERS: '1',
        SFU_HOST_ID: 'edge',
        SFU_API_SECRET: TEST_API_SECRET,
        SFU_TOKEN_SECRET: TEST_TOKEN_SECRET,
        SFU_CLUSTER_SECRET: CLUSTER_SECRET,
        SFU_HEARTBEAT_MS: '500',
        LOG_LEVEL: 'info',
        ...(process.env.MEDIASOUP_WORKER_BIN ? { MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN } : {}),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const s of [edge.stdout!, edge.stderr!]) s.on('data', (d: Buffer) => (edgeLog = (edgeLog + d.toString()).slice(-20_000)));
    // Up once its health answers over the veth pair (the namespace is another host to us).
    const deadline = Date.now() + 60_000;
    while (!(await fetch(`${edgeUrl()}/healthz`).then((r) => r.ok, () => false))) {
      if (edge.exitCode !== null || Date.now() > deadline) throw new Error(`the second SFU host did not come up (exit ${edge.exitCode}):\n${edgeLog.slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }, 90_000);

  afterAll(async () => {
    if (edge) await stopChild(edge, 5000);
    await origin?.close();
    await db?.destroy();
    await proxy?.close();
    await ns?.delete();
    await backend?.cleanup();
    if (edgeDataDir) rmSync(edgeDataDir, { recursive: true, force: true });
  });

  it('a viewer on the second host receives the speakers of the origin; a dead second host takes only its own participants', { timeout: 120_000 }, async () => {
    await origin.admin('POST', '/rooms', { id: 'townhall', name: 'Town hall' });
    const speakers: Bot[] = [];
    const viewers: Bot[] = [];
    try {
      for (const name of ['speaker-a', 'speaker-b']) {
        const minted = await origin.admin('POST', '/rooms/townhall/tokens', { identity: name, name });
        expect(minted.body.joinUrl.startsWith(origin.url), 'the origin has room: speakers land there').toBe(true);
        speakers.push(await Bot.join(origin.url, minted.body.token, name, { publish: true, consume: false }));
      }
      // Both hosts are registered; the origin is full once its heartbeat says so.
      await expect.poll(async () => (await edgeAdmin('GET', '/cluster/hosts')).body.hosts.map((h: { id: string; participants: number }) => `${h.id}:${h.participants}`).sort(), { timeout: 10_000 }).toEqual(['edge:0', 'origin:2']);

      // A link minted by either host lands the viewer on the host with capacity: the second one.
      const fromEdge = await edgeAdmin('POST', '/rooms/townhall/tokens', { identity: 'viewer-1', name: 'viewer-1' });
      const fromOrigin = await origin.admin('POST', '/rooms/townhall/tokens', { identity: 'viewer-2', name: 'viewer-2' });
      for (const m of [fromEdge, fromOrigin]) expect(new URL(m.body.joinUrl).origin).toBe(edgeUrl());
      for (const [m, name] of [[fromEdge, 'viewer-1'], [fromOrigin, 'viewer-2']] as const) {
        viewers.push(await Bot.join(new URL(m.body.joinUrl).origin, m.body.token, name, { connectTimeoutMs: 20_000 }));
      }

      // Each viewer consumes both speakers' audio and video, piped from the origin, and media arrives.
      for (const v of viewers) {
        expect(v.received().map((c) => c.kind).sort()).toEqual(['audio', 'audio', 'video', 'video']);
        await expect.poll(() => v.received().filter((c) => c.packets > 0).length, { timeout: 20_000, interval: 250 }).toBe(4);
      }
      for (const v of viewers) v.resetCounters();
      await new Promise((r) => setTimeout(r, 2000));
      for (const v of viewers) for (const c of v.received().filter((x) => x.kind === 'audio')) expect(c.packets, `${v.name} audio from the origin in 2 s`).toBeGreaterThan(50);

      // The viewers are the second host's participants; the origin's room has only its speakers (no client sees the link).
      expect((await edgeAdmin('GET', '/rooms/townhall/peers')).body.peers.map((p: { id: string }) => p.id).sort()).toEqual(['viewer-1', 'viewer-2']);
      expect((await origin.admin('GET', '/rooms/townhall/peers')).body.peers.map((p: { id: string }) => p.id).sort()).toEqual(['speaker-a', 'speaker-b']);
      expect(origin.running.sfu.cascade!.linkCount).toBe(1);
      // Publishing is the origin's: a viewer there cannot publish through the second host.
      const send = await viewers[0]!.sig.request<{ id: string }>('createWebRtcTransport', { direction: 'send' });
      const opus = { codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }], encodings: [{ ssrc: 1234 }], headerExtensions: [], rtcp: { cname: 'x', reducedSize: true } };
      await expect(viewers[0]!.sig.request('produce', { transportId: send.id, kind: 'audio', rtpParameters: opus })).rejects.toMatchObject({ code: 'NOT_ORIGIN' });

      // The second host dies: its link goes, the origin's participants stay and keep sending.
      edge!.kill('SIGKILL');
      await expect.poll(() => origin.running.sfu.cascade!.linkCount, { timeout: 10_000 }).toBe(0);
      expect(origin.running.sfu.rooms.get('townhall')?.peers.size).toBe(2);
      const sent = speakers.map((s) => s.senders[0]!.packets);
      await new Promise((r) => setTimeout(r, 500));
      speakers.forEach((s, i) => expect(s.senders[0]!.packets).toBeGreaterThan(sent[i]!));
      expect(speakers.every((s) => s.senders.every((x) => !x.stopped))).toBe(true);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- second host log (tail) ---\n${edgeLog.slice(-4000)}`, { cause: err });
    } finally {
      for (const b of [...viewers, ...speakers]) b.close();
    }
  });
});
