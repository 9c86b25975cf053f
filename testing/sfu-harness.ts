import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { openDatabase, type Db } from '../db/database.ts';
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
export async function startTestSfu(opts: { db?: Db; dataDir?: string; overrides?: Partial<Record<ConfigKey, unknown>> } = {}): Promise<TestSfu> {
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
  const running = await startSfu(config, createLogger({ level: config.LOG_LEVEL }), { db: opts.db ?? ownDb!, audit: (db) => new AuditLog(db) });
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
      const frame = JSON.parse(raw.toString());
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
