import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { ZodType } from 'zod';
import {
  RECORDER_CONTROL_VERSION,
  RecorderHealthSchema,
  helloMessage,
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
  /** Every verified health answer (load, state). */
  health: [health: RecorderHealth];
}

/**
 * The SFU's side of the recorder control contract (HTTP, v1), plus a health watch:
 * a new recorder instanceId means the recorder restarted and every tap must re-attach.
 * Every health call carries a fresh nonce the recorder must answer with an HMAC under
 * RECORDER_SECRET: a recorder that cannot (a wrong secret, a forged registry row) is never
 * "up", so no track and no authenticated call goes to it.
 */
export class RecorderClient extends EventEmitter<RecorderClientEvents> {
  private timer: NodeJS.Timeout | undefined;
  private instanceId: string | undefined;
  private isUp = false;
  private last: RecorderHealth | undefined;

  constructor(
    private readonly baseUrl: string,
    private readonly secret: string,
    private readonly logger: Logger,
    private readonly pollMs = 1000,
    /** The registry id this recorder must prove (pool discovery); unset: whatever id it proves. */
    private readonly expectedId?: string,
  ) {
    super();
  }

  get up(): boolean {
    return this.isUp;
  }

  get url(): string {
    return this.baseUrl;
  }

  /** The last verified health answer (its recorder id, state, load). */
  get lastHealth(): RecorderHealth | undefined {
    return this.last;
  }

  start(): void {
    const poll = async () => {
      try {
        const h = await this.health();
        this.last = h;
        const restarted = this.instanceId !== undefined && h.instanceId !== this.instanceId;
        const cameBack = !this.isUp;
        this.instanceId = h.instanceId;
        this.isUp = true;
        if (restarted || cameBack) this.emit('up', h, restarted);
        this.emit('health', h);
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

  /** Health, verified: the recorder proves it holds RECORDER_SECRET by its HMAC over a nonce of ours. */
  async health(): Promise<RecorderHealth> {
    const nonce = randomBytes(16).toString('hex');
    const h = await this.call('GET', `/v1/health?nonce=${nonce}`, undefined, RecorderHealthSchema, Math.min(5000, Math.max(500, this.pollMs * 2)));
    const expected = createHmac('sha256', this.secret).update(helloMessage(nonce, h.recorderId ?? '', h.instanceId)).digest();
    const proof = Buffer.from(h.proof ?? '', 'hex');
    if (proof.length !== expected.length || !timingSafeEqual(proof, expected)) {
      throw new VerbatimError('UNAUTHORIZED', `recorder at ${this.baseUrl} did not prove RECORDER_SECRET: it gets no tracks`, { hint: 'Give the SFU and every recorder the same RECORDER_SECRET; a registry row no real recorder answers for is ignored.' });
    }
    if (this.expectedId !== undefined && h.recorderId !== this.expectedId) {
      throw new VerbatimError('UNAUTHORIZED', `recorder at ${this.baseUrl} is ${h.recorderId ?? '(no id)'}, not ${this.expectedId} as the registry says`, { hint: 'Each recorder needs its own RECORDER_ID and URL.' });
    }
    return h;
  }

  async releaseSession(room: string, session: string): Promise<void> {
    await this.call('POST', `/v1/sessions/${encodeURIComponent(session)}/release`, { v: RECORDER_CONTROL_VERSION, room });
  }

  async drain(state: 'active' | 'draining' = 'draining'): Promise<void> {
    await this.call('POST', '/v1/drain', { v: RECORDER_CONTROL_VERSION, state });
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

  private async call<T>(method: string, p: string, body?: unknown, schema?: ZodType<T>, timeoutMs = 5000): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${p}`, {
        method,
        headers: { authorization: `Bearer ${this.secret}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(timeoutMs),
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
