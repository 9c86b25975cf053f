import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db } from '../../../db/database.ts';
import { Bot } from '../../../testing/bots/bot.ts';
import { testBackends, type TestBackend } from '../../../testing/databases.ts';
import { createNetns, netnsUnavailable, tcpForward, type Netns } from '../../../testing/netns.ts';
import { startSfuHostProcess, type SfuHostProcess } from '../../../testing/sfu-host-process.ts';
import { startTestSfu, TEST_API_SECRET, type TestSfu } from '../../../testing/sfu-harness.ts';
import WebSocket from 'ws';

/**
 * A room over several hosts: the origin SFU runs here, a second SFU host runs as its own process
 * in a network namespace (198.18.0.0/15, made and deleted by this test), and both share the room
 * registry in Postgres. Postgres listens on 127.0.0.1 only, so the host in the namespace reaches
 * it through a TCP forwarder this test runs on the root namespace's veth address.
 */
const CLUSTER_SECRET = 'test-cluster-secret-0123456789';
const EDGE_PORT = 8080;
const unavailable = await netnsUnavailable();
const [lite, pgBackend] = await testBackends();
await lite!.cleanup();
const skipReason = unavailable ?? (pgBackend!.available ? undefined : 'Postgres is not reachable (the room registry is shared through it)');

let ns: Netns;
let proxy: Awaited<ReturnType<typeof tcpForward>>;
let backend: TestBackend;
let db: Db;
let origin: TestSfu;
let edge: SfuHostProcess | undefined;
const edgeUrl = () => `http://${ns.nsAddress}:${EDGE_PORT}`;
const edgeLog = () => edge?.log() ?? '';

describe.skipIf(skipReason !== undefined)(`a room over several hosts (cascading)${skipReason ? ` — skipped: ${skipReason}` : ''}`, () => {
  beforeAll(async () => {
    ns = await createNetns();
    proxy = await tcpForward(ns.hostAddress, 0, { host: '127.0.0.1', port: 5432 });
    backend = pgBackend!;
    db = await backend.open();
    const cluster = { SFU_CLUSTER_SECRET: CLUSTER_SECRET, SFU_HEARTBEAT_MS: 500 };
    // The origin takes 2 participants (its speakers): join links then send viewers to the other host.
    origin = await startTestSfu({ db, overrides: { ...cluster, SFU_HOST: ns.hostAddress, SFU_RTC_LISTEN_IP: ns.hostAddress, SFU_HOST_ID: 'origin', SFU_HOST_CAPACITY: 2 } });
    edge = await startEdge('edge');
  }, 90_000);

  /** The real SFU process, in the namespace: another host as far as the network goes. */
  async function startEdge(id: string): Promise<SfuHostProcess> {
    const dbUrl = new URL(backend.dbOptions.url!);
    dbUrl.hostname = ns.hostAddress;
    dbUrl.port = String(proxy.port);
    return startSfuHostProcess({
      spawn: ns.spawn,
      address: ns.nsAddress,
      port: EDGE_PORT,
      env: { DATABASE_URL: dbUrl.toString(), DATABASE_SCHEMA: backend.dbOptions.schema, SFU_HOST_ID: id, SFU_CLUSTER_SECRET: CLUSTER_SECRET, SFU_HEARTBEAT_MS: '500' },
    });
  }

  afterAll(async () => {
    await edge?.stop();
    await origin?.close();
    await db?.destroy();
    await proxy?.close();
    await ns?.delete();
    await backend?.cleanup();
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
      await expect.poll(async () => (await edge!.admin('GET', '/cluster/hosts')).body.hosts.map((h: { id: string; participants: number }) => `${h.id}:${h.participants}`).sort(), { timeout: 10_000 }).toEqual(['edge:0', 'origin:2']);

      // A link minted by either host lands the viewer on the host with capacity: the second one.
      const fromEdge = await edge!.admin('POST', '/rooms/townhall/tokens', { identity: 'viewer-1', name: 'viewer-1' });
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
      expect((await edge!.admin('GET', '/rooms/townhall/peers')).body.peers.map((p: { id: string }) => p.id).sort()).toEqual(['viewer-1', 'viewer-2']);
      expect((await origin.admin('GET', '/rooms/townhall/peers')).body.peers.map((p: { id: string }) => p.id).sort()).toEqual(['speaker-a', 'speaker-b']);
      expect(origin.running.sfu.cascade!.linkCount).toBe(1);
      expect(await (await fetch(`${origin.url}/metrics`)).text()).toMatch(/^verbatim_sfu_cascade_links\{side="origin"[^}]*\} 1$/m);
      expect(await (await fetch(`${edgeUrl()}/metrics`)).text()).toMatch(/^verbatim_sfu_cascade_links\{side="edge"[^}]*\} 1$/m);
      // The host-to-host link takes only the cluster's secret.
      for (const auth of [undefined, `Bearer ${TEST_API_SECRET}`]) {
        const status = await new Promise<number>((resolve) => {
          const ws = new WebSocket(`${origin.url.replace(/^http/, 'ws')}/cluster/v1/rooms/townhall/link`, auth ? { headers: { authorization: auth } } : {});
          ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
          ws.once('open', () => (ws.close(), resolve(101)));
          ws.once('error', () => resolve(-1));
        });
        expect(status, `link with ${auth ?? 'no authorization'}`).toBe(401);
      }
      // Publishing is the origin's: a viewer there cannot publish through the second host.
      const send = await viewers[0]!.sig.request<{ id: string }>('createWebRtcTransport', { direction: 'send' });
      const opus = { codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2 }], encodings: [{ ssrc: 1234 }], headerExtensions: [], rtcp: { cname: 'x', reducedSize: true } };
      await expect(viewers[0]!.sig.request('produce', { transportId: send.id, kind: 'audio', rtpParameters: opus })).rejects.toMatchObject({ code: 'NOT_ORIGIN' });

      // The second host dies: its link goes, the origin's participants stay and keep sending.
      edge!.child.kill('SIGKILL');
      await expect.poll(() => origin.running.sfu.cascade!.linkCount, { timeout: 10_000 }).toBe(0);
      expect(origin.running.sfu.rooms.get('townhall')?.peers.size).toBe(2);
      const sent = speakers.map((s) => s.senders[0]!.packets);
      await new Promise((r) => setTimeout(r, 500));
      speakers.forEach((s, i) => expect(s.senders[0]!.packets).toBeGreaterThan(sent[i]!));
      expect(speakers.every((s) => s.senders.every((x) => !x.stopped))).toBe(true);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- second host log (tail) ---\n${edgeLog().slice(-4000)}`, { cause: err });
    } finally {
      for (const b of [...viewers, ...speakers]) b.close();
    }
  });

  it('when the origin host goes, the second host keeps its viewers and becomes the room\'s origin', { timeout: 90_000 }, async () => {
    await edge?.stop();
    edge = await startEdge('edge-2');
    await origin.admin('POST', '/rooms', { id: 'relay', name: 'Relay' });
    const token = async (identity: string) => (await origin.admin('POST', '/rooms/relay/tokens', { identity, name: identity })).body.token as string;
    const speaker = await Bot.join(origin.url, await token('speaker'), 'speaker', { publish: true, consume: false, kinds: ['audio'] });
    const viewer = await Bot.join(edgeUrl(), await token('viewer'), 'viewer', { kinds: ['audio'] });
    try {
      await expect.poll(() => viewer.received()[0]?.packets ?? 0, { timeout: 10_000 }).toBeGreaterThan(0);
      const originOf = async () => (await db.selectFrom('room_origins').select('host_id').where('room_id', '=', 'relay').executeTakeFirst())?.host_id;
      expect(await originOf()).toBe('origin');
      // The origin host stops (its participants go with it); the viewer on the second host stays.
      speaker.close();
      await origin.close();
      await expect.poll(originOf, { timeout: 15_000, interval: 250 }).toBe('edge-2');
      expect((await edge.admin('GET', '/rooms/relay/peers')).body.peers.map((p: { id: string }) => p.id)).toEqual(['viewer']);
      await expect.poll(() => viewer.sig.request('listPeers').then((r: { peers: { id: string }[] }) => r.peers.map((p) => p.id)), { timeout: 5000 }).toEqual(['viewer']);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- second host log (tail) ---\n${edgeLog().slice(-4000)}`, { cause: err });
    } finally {
      viewer.close();
      speaker.close();
    }
  });
});
