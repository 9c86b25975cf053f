import { EventEmitter } from 'node:events';
import type { ZodType } from 'zod';
import {
  RECORDER_CONTROL_VERSION,
  RecorderHealthSchema,
  StartTrackResponseSchema,
  type RecorderHealth,
  type StartTrackRequest,
  type StartTrackResponse,
  type TimelineEvent,
} from '../../lib/contracts/recorder-control.ts';
import { VerbatimError, type ErrorCode, ErrorCodes } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { tapKeyContext, wrapTapKey } from '../../lib/rtp/srtp.ts';

interface RecorderClientEvents {
  /** The recorder stopped answering. */
  down: [error: string];
  /** The recorder answers; `restarted` when it is a new instance (its taps are gone). */
  up: [health: RecorderHealth, restarted: boolean];
}

/**
 * The SFU's side of the recorder control contract (HTTP, v1), plus a health watch:
 * a new recorder instanceId means the recorder restarted and every tap must re-attach.
 */
export class RecorderClient extends EventEmitter<RecorderClientEvents> {
  private timer: NodeJS.Timeout | undefined;
  private instanceId: string | undefined;
  private isUp = false;

  constructor(
    private readonly baseUrl: string,
    private readonly secret: string,
    private readonly logger: Logger,
    private readonly pollMs = 1000,
  ) {
    super();
  }

  get up(): boolean {
    return this.isUp;
  }

  start(): void {
    const poll = async () => {
      try {
        const h = await this.health();
        const restarted = this.instanceId !== undefined && h.instanceId !== this.instanceId;
        const cameBack = !this.isUp;
        this.instanceId = h.instanceId;
        this.isUp = true;
        if (restarted || cameBack) this.emit('up', h, restarted);
      } catch (err) {
        if (this.isUp || this.instanceId === undefined) this.emit('down', (err as Error).message);
        this.isUp = false;
        if (this.instanceId === undefined) this.instanceId = '';
      } finally {
        if (this.timer !== undefined) this.timer = setTimeout(pollSafely, this.pollMs);
      }
    };
    // A listener that throws must not stop the polling or escape as an unhandled rejection.
    const pollSafely = () => void poll().catch((err: unknown) => this.logger.error({ err }, 'recorder health listener failed'));
    this.timer = setTimeout(pollSafely, 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  async health(): Promise<RecorderHealth> {
    return this.call('GET', '/v1/health', undefined, RecorderHealthSchema);
  }

  async startTrack(req: Omit<StartTrackRequest, 'v'>): Promise<StartTrackResponse> {
    return this.call('POST', '/v1/tracks', { v: RECORDER_CONTROL_VERSION, ...req }, StartTrackResponseSchema);
  }

  /** A tap's SRTP key, wrapped for the recorder (which shares the secret) and bound to this track. */
  wrapTapKey(session: string, track: string, key: Buffer): string {
    return wrapTapKey(this.secret, tapKeyContext(session, track), key);
  }

  async stopTrack(session: string, track: string): Promise<void> {
    await this.call('DELETE', `/v1/sessions/${encodeURIComponent(session)}/tracks/${encodeURIComponent(track)}`);
  }

  async events(room: string, session: string, events: TimelineEvent[]): Promise<void> {
    await this.call('POST', `/v1/sessions/${encodeURIComponent(session)}/events`, { v: RECORDER_CONTROL_VERSION, room, events });
  }

  async endSession(room: string, session: string, reason: string): Promise<void> {
    await this.call('POST', `/v1/sessions/${encodeURIComponent(session)}/end`, { v: RECORDER_CONTROL_VERSION, room, reason });
  }

  private async call<T>(method: string, p: string, body?: unknown, schema?: ZodType<T>): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${p}`, {
        method,
        headers: { authorization: `Bearer ${this.secret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(5000),
      });
    } catch (err) {
      throw new VerbatimError('RECORDER_UNAVAILABLE', `recorder at ${this.baseUrl} does not answer: ${(err as Error).message}`, { hint: 'Start the recorder (npm run recorder) or fix RECORDER_URL.' });
    }
    const text = await res.text();
    const json = text ? (JSON.parse(text) as unknown) : undefined;
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string; hint?: string } } | undefined)?.error;
      const code = (e?.code && e.code in ErrorCodes ? e.code : 'RECORDER_UNAVAILABLE') as ErrorCode;
      throw new VerbatimError(code, e?.message ?? `recorder answered ${res.status}`, e?.hint ? { hint: e.hint } : {});
    }
    return schema ? schema.parse(json) : (json as T);
  }
}
