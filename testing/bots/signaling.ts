import WebSocket from 'ws';
import { SIGNALING_VERSION } from '../../services/lib/contracts/signaling.ts';

/** A refused signaling request, with the SFU's stable code. */
export class BotSignalingError extends Error {
  constructor(
    readonly method: string,
    readonly code: string,
    message: string,
  ) {
    super(`${method}: ${code} ${message}`);
  }
}

/**
 * The bots' signaling client: requests with ids, one answer each; notifications are counted by
 * name (a bot in a big room must not keep every one) and handed to an optional listener.
 */
export class BotSignaling {
  private nextId = 1;
  private readonly pending = new Map<number, { method: string; resolve: (data: any) => void; reject: (e: Error) => void }>();
  readonly notificationCounts = new Map<string, number>();
  onNotification: ((name: string, data: any) => void) | undefined;
  closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (raw: Buffer) => {
      const frame = JSON.parse(raw.toString());
      if (typeof frame.notification === 'string') {
        this.notificationCounts.set(frame.notification, (this.notificationCounts.get(frame.notification) ?? 0) + 1);
        this.onNotification?.(frame.notification, frame.data);
        return;
      }
      const p = this.pending.get(frame.id);
      if (!p) return;
      this.pending.delete(frame.id);
      if (frame.ok) p.resolve(frame.data);
      else p.reject(new BotSignalingError(p.method, frame.error?.code ?? 'UNKNOWN', frame.error?.message ?? ''));
    });
    ws.on('close', () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new BotSignalingError(p.method, 'DISCONNECTED', 'signaling connection closed'));
      this.pending.clear();
    });
  }

  static connect(baseUrl: string): Promise<BotSignaling> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/ws`);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new BotSignaling(ws)));
      ws.once('error', reject);
    });
  }

  request<T = any>(method: string, data: unknown = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(new BotSignalingError(method, 'DISCONNECTED', 'signaling connection closed'));
      this.pending.set(id, { method, resolve, reject });
      this.ws.send(JSON.stringify({ v: SIGNALING_VERSION, id, method, data }));
    });
  }

  close(): void {
    this.ws.close();
  }
}
