import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
// fake-mediastreamtrack is mediasoup-client's own dependency (its FakeHandler's tracks).
import { FakeMediaStreamTrack } from 'fake-mediastreamtrack';
import { Device, FakeHandler, type types as msc } from 'mediasoup-client';
import * as fakeParameters from 'mediasoup-client/fakeParameters';
import WebSocket from 'ws';
import { openDatabase, type Db } from '../db/database.ts';
import type { AuditEntryInput, AuditSink } from '../services/lib/audit-sink.ts';
import { loadConfig, type ConfigKey } from '../services/lib/config.ts';
import { createLogger } from '../services/lib/logger.ts';
import { AuditLog } from '../services/audit/index.ts';
import { startSfu, type RunningSfu } from '../services/sfu/index.ts';

export const TEST_API_SECRET = 'test-api-secret-0123456789';
export const TEST_TOKEN_SECRET = 'test-token-secret-0123456789';

export interface TestSfu {
  running: RunningSfu;
  url: string;
  dataDir: string;
  admin<T = any>(method: string, p: string, body?: unknown, opts?: { auth?: string | null }): Promise<{ status: number; body: T }>;
  close(): Promise<void>;
}

/** A real SFU (real mediasoup worker, real HTTP/WS) on a free port with test secrets. */
export async function startTestSfu(opts: { db?: Db; dataDir?: string; overrides?: Partial<Record<ConfigKey, unknown>>; audit?: (db: Db) => AuditSink } = {}): Promise<TestSfu> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'verbatim-sfu-'));
  const config = loadConfig({
    env: {},
    overrides: {
      DATA_DIR: dataDir,
      SFU_PORT: 0,
      SFU_WORKERS: 1,
      SFU_API_SECRET: TEST_API_SECRET,
      SFU_TOKEN_SECRET: TEST_TOKEN_SECRET,
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
      MEDIASOUP_WORKER_BIN: process.env.MEDIASOUP_WORKER_BIN,
      ...opts.overrides,
    },
  });
  // Without a database of the test's own, an in-process PGlite in the data dir (as the SFU
  // tests always had): no server to start per test, nothing left behind.
  const ownDb = opts.db ? undefined : await openDatabase({ pgliteDir: path.join(dataDir, 'pglite') });
  const running = await startSfu(config, createLogger({ level: config.LOG_LEVEL }), { db: opts.db ?? ownDb!, audit: opts.audit ?? ((db) => new AuditLog(db)) });
  return {
    running,
    url: running.url,
    dataDir,
    async admin(method, p, body, o = {}) {
      const auth = o.auth === undefined ? TEST_API_SECRET : o.auth;
      const res = await fetch(`${running.url}/api/v1${p}`, {
        method,
        headers: { ...(auth !== null ? { authorization: `Bearer ${auth}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined };
    },
    async close() {
      await running.close();
      await ownDb?.destroy();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Minimal signaling client for protocol tests (the browser uses the meeting page). */
export class TestSignalingClient {
  private nextId = 1;
  private readonly pending = new Map<number, (frame: any) => void>();
  readonly notifications: { notification: string; data: any }[] = [];
  readonly orphanResponses: any[] = [];
  closed: { code: number; reason: string } | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (raw) => {
      // ws hands over a Buffer (binaryType 'nodebuffer', its default).
      const frame = JSON.parse((raw as Buffer).toString());
      if (frame.notification) this.notifications.push(frame);
      else if (frame.id !== null && this.pending.has(frame.id)) {
        this.pending.get(frame.id)!(frame);
        this.pending.delete(frame.id);
      } else this.orphanResponses.push(frame);
    });
    ws.on('close', (code, reason) => (this.closed = { code, reason: reason.toString() }));
  }

  static async connect(baseUrl: string): Promise<TestSignalingClient> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/ws`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new TestSignalingClient(ws);
  }

  /** Sends a request and returns the whole response frame ({ ok, data } or { ok: false, error }). */
  request(method: string, data: unknown = {}): Promise<any> {
    const id = this.nextId++;
    return this.sendRaw(JSON.stringify({ v: 1, id, method, data }), id);
  }

  sendRaw(text: string | Buffer, id?: number): Promise<any> {
    return new Promise((resolve) => {
      if (id !== undefined) this.pending.set(id, resolve);
      else {
        const before = this.orphanResponses.length;
        const poll = setInterval(() => {
          if (this.orphanResponses.length > before) {
            clearInterval(poll);
            resolve(this.orphanResponses[before]);
          }
        }, 10);
      }
      this.ws.send(text);
    });
  }

  async waitFor(pred: (n: { notification: string; data: any }) => boolean, timeoutMs = 5000): Promise<{ notification: string; data: any }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.notifications.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`notification not received; got ${JSON.stringify(this.notifications.map((n) => n.notification))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.ws.close();
  }
}

export const OPUS_RTP_PARAMETERS = (ssrc: number) => ({
  codecs: [{ mimeType: 'audio/opus', payloadType: 100, clockRate: 48000, channels: 2, parameters: {}, rtcpFeedback: [] }],
  encodings: [{ ssrc }],
  headerExtensions: [],
  rtcp: { cname: `c${ssrc}`, reducedSize: true },
});

/** One signaling request as a client sent it (method and data), for replaying and mutating. */
export interface RecordedRequest {
  method: string;
  data: any;
}

/**
 * A participant driven by mediasoup-client's own Device with its FakeHandler (the client library
 * without a browser): the rtpCapabilities, dtlsParameters and rtpParameters it sends are what
 * mediasoup-client really produces. Every request that succeeded is kept in `exchange`.
 */
export class FakeDeviceClient {
  readonly exchange: RecordedRequest[] = [];
  readonly device = new Device({ handlerFactory: FakeHandler.createFactory(fakeParameters) });
  sendTransport: msc.Transport | undefined;
  recvTransport: msc.Transport | undefined;
  joined: any;

  private constructor(readonly sig: TestSignalingClient) {}

  static async join(baseUrl: string, token: string): Promise<FakeDeviceClient> {
    const c = new FakeDeviceClient(await TestSignalingClient.connect(baseUrl));
    c.joined = await c.request('join', { token });
    await c.device.load({ routerRtpCapabilities: c.joined.routerRtpCapabilities });
    await c.request('setRtpCapabilities', { rtpCapabilities: c.device.rtpCapabilities });
    return c;
  }

  /** Sends a request; resolves its data, rejects with the error frame when refused. */
  async request(method: string, data: unknown = {}): Promise<any> {
    const r = await this.sig.request(method, data);
    if (!r.ok) throw Object.assign(new Error(`${method}: ${r.error.code} ${r.error.message}`), { code: r.error.code, frame: r });
    this.exchange.push({ method, data: structuredClone(data) });
    return r.data;
  }

  private async transport(direction: 'send' | 'recv'): Promise<msc.Transport> {
    const params = await this.request('createWebRtcTransport', { direction });
    const t = direction === 'send' ? this.device.createSendTransport(params) : this.device.createRecvTransport(params);
    t.on('connect', ({ dtlsParameters }, ok, fail) => {
      this.request('connectWebRtcTransport', { transportId: t.id, dtlsParameters }).then(() => ok(), fail);
    });
    t.on('produce', ({ kind, rtpParameters, appData }, ok, fail) => {
      this.request('produce', { transportId: t.id, kind, rtpParameters, appData }).then(({ id }) => ok({ id }), fail);
    });
    return t;
  }

  /** Publishes one fake track per kind; resolves the producer ids. */
  async publish(kinds: ('audio' | 'video')[] = ['audio', 'video']): Promise<string[]> {
    this.sendTransport ??= await this.transport('send');
    const ids = [];
    for (const kind of kinds) {
      const producer = await this.sendTransport.produce({ track: new FakeMediaStreamTrack({ kind }) as unknown as MediaStreamTrack });
      ids.push(producer.id);
    }
    return ids;
  }

  /** Consumes a producer and acknowledges it (resumeConsumer), as the meeting page does. */
  async consume(producerId: string): Promise<msc.Consumer> {
    this.recvTransport ??= await this.transport('recv');
    const c = await this.request('consume', { transportId: this.recvTransport.id, producerId });
    const consumer = await this.recvTransport.consume({ id: c.id, producerId: c.producerId, kind: c.kind, rtpParameters: c.rtpParameters });
    await this.request('resumeConsumer', { consumerId: consumer.id });
    return consumer;
  }

  close(): void {
    this.sendTransport?.close();
    this.recvTransport?.close();
    this.sig.close();
  }
}

/**
 * A raw HTTP exchange on a fresh socket, for requests fetch will not send (bad encodings, huge
 * headers, garbage): resolves with the first response (by Content-Length), or status 0 when the
 * server closed without one. The socket is not half-closed: Node drops a request whose client ended.
 */
export async function rawHttp(baseUrl: string, request: string | Buffer, timeoutMs = 5000): Promise<{ status: number; headers: Record<string, string>; body: string; error?: string }> {
  const { hostname, port } = new URL(baseUrl);
  // A response to HEAD announces a Content-Length but carries no body.
  const isHead = Buffer.from(request).subarray(0, 5).toString('latin1') === 'HEAD ';
  return new Promise((resolve) => {
    const socket = net.connect(Number(port), hostname);
    let buf = Buffer.alloc(0);
    let settled = false;
    const finish = (r: { status: number; headers: Record<string, string>; body: string; error?: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const parse = (): boolean => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const length = isHead ? 0 : Number(headers['content-length'] ?? NaN);
      const body = buf.subarray(end + 4);
      if (Number.isFinite(length) && body.length < length) return false;
      finish({ status, headers, body: body.subarray(0, Number.isFinite(length) ? length : body.length).toString('utf8') });
      return true;
    };
    const timer = setTimeout(() => finish({ status: 0, headers: {}, body: '', error: 'timeout' }), timeoutMs);
    socket.on('connect', () => socket.write(request));
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      parse();
    });
    socket.on('error', (err) => finish({ status: 0, headers: {}, body: '', error: err.message }));
    socket.on('close', () => {
      if (!parse()) finish({ status: 0, headers: {}, body: buf.toString('utf8'), error: 'closed without a complete response' });
    });
  });
}

/**
 * The real audit trail with a window onto it: every entry the SFU asks for is kept (also when it
 * could not be written), and `failWhen` makes appends fail on purpose, the way a lost database
 * connection would, to show what the SFU does without evidence.
 */
export class ObservedAuditSink implements AuditSink {
  readonly entries: AuditEntryInput[] = [];
  failWhen: ((e: AuditEntryInput) => boolean) | undefined;

  constructor(private readonly inner: AuditSink) {}

  async append(entry: AuditEntryInput): Promise<unknown> {
    this.entries.push(entry);
    if (this.failWhen?.(entry)) throw new Error('audit trail unavailable (injected by the test)');
    return this.inner.append(entry);
  }

  /** Entries tied to one HTTP request (its x-request-id). */
  forRequest(requestId: string): AuditEntryInput[] {
    return this.entries.filter((e) => e.details?.requestId === requestId);
  }
}
