import os from 'node:os';
import { sql } from 'kysely';
import { Counter, type Registry } from 'prom-client';
import type { Db } from '../../../db/database.ts';
import type { Logger } from '../../lib/logger.ts';
import type { UploadBacklog } from './segment-uploader.ts';

export interface RegistrationInfo {
  id: string;
  instanceId: string;
  capacity: number;
  recordingsDir: string;
  heartbeatMs: number;
  /** Tracks being recorded now (sent with every heartbeat). */
  load: () => number;
  /** The raw-upload backlog (sent with every heartbeat; null: raw upload is off). */
  uploads?: () => UploadBacklog | null;
}

/**
 * This recorder's row in the pool registry (the recorders table): written at start and
 * refreshed every RECORDER_HEARTBEAT_MS with its load, in the database's clock (now()), so
 * hosts with skewed clocks agree on who is alive. The row is only an announcement: an SFU
 * places tracks on it only after the recorder proved RECORDER_SECRET to it (the health
 * call's HMAC), so a forged row gets nothing. Closing removes the row: a recorder that
 * stops cleanly is not mistaken for a dead one.
 */
export class RecorderRegistration {
  private timer: NodeJS.Timeout | undefined;
  private beating: Promise<void> = Promise.resolve();
  private stateValue: 'active' | 'draining' = 'active';
  private closed = false;
  private failing = false;
  private url = '';
  private readonly failures: Counter;

  constructor(
    private readonly db: Db,
    private readonly info: RegistrationInfo,
    private readonly logger: Logger,
    registry?: Registry,
  ) {
    this.failures = new Counter({ name: 'verbatim_recorder_heartbeat_failures_total', help: 'Registry heartbeats that could not be written (SFUs treat a recorder without heartbeats as dead)', registers: registry ? [registry] : [] });
  }

  get state(): 'active' | 'draining' {
    return this.stateValue;
  }

  /** Registers at `url` (the control API SFUs reach) and starts the heartbeat. */
  async start(url: string): Promise<void> {
    this.url = url;
    await this.db
      .insertInto('recorders')
      .values({ id: this.info.id, url: this.url, instance_id: this.info.instanceId, host: os.hostname(), capacity: this.info.capacity, load: this.info.load(), state: 'active', recordings_dir: this.info.recordingsDir, heartbeat_at: sql<Date>`now()`, started_at: sql<Date>`now()`, ...this.backlogColumns() })
      .onConflict((oc) =>
        oc.column('id').doUpdateSet({ url: this.url, instance_id: this.info.instanceId, host: os.hostname(), capacity: this.info.capacity, load: this.info.load(), state: 'active', recordings_dir: this.info.recordingsDir, heartbeat_at: sql<Date>`now()`, started_at: sql<Date>`now()`, ...this.backlogColumns() }),
      )
      .execute();
    this.logger.info({ recorderId: this.info.id, url: this.url }, 'registered in the recorder pool');
    const tick = () => {
      this.beating = this.beat().finally(() => {
        if (!this.closed) this.timer = setTimeout(tick, this.info.heartbeatMs);
      });
    };
    this.timer = setTimeout(tick, this.info.heartbeatMs);
  }

  private backlogColumns() {
    const b = this.info.uploads?.() ?? null;
    return {
      upload_backlog_segments: b?.segments ?? null,
      upload_backlog_bytes: b?.bytes ?? null,
      upload_oldest_at: b?.oldestQueuedAt ?? null,
      upload_failed_attempts: b?.failedAttempts ?? null,
      upload_last_error: b?.lastError?.slice(0, 500) ?? null,
    };
  }

  private async beat(): Promise<void> {
    try {
      // The row's state is the truth: `verbatim recorders drain` sets it from any host.
      const row = await this.db
        .updateTable('recorders')
        .set({ heartbeat_at: sql<Date>`now()`, load: this.info.load(), ...this.backlogColumns() })
        .where('id', '=', this.info.id)
        .where('instance_id', '=', this.info.instanceId)
        .returning('state')
        .executeTakeFirst();
      if (row && row.state !== this.stateValue) {
        this.stateValue = row.state;
        this.logger.warn({ recorderId: this.info.id, state: row.state }, 'recorder state changed in the registry');
      }
      if (this.failing) this.logger.info({ recorderId: this.info.id }, 'recorder heartbeat restored');
      this.failing = false;
    } catch (err) {
      this.failures.inc();
      // SFUs will see this recorder as dead and move its tracks: say so once, not every beat.
      if (!this.failing) this.logger.error({ err, recorderId: this.info.id }, 'recorder heartbeat failed: SFUs will treat this recorder as dead');
      this.failing = true;
    }
  }

  /** Draining: SFUs move this recorder's tracks to others and place no new ones here. */
  async setState(state: 'active' | 'draining'): Promise<void> {
    this.stateValue = state;
    await this.db.updateTable('recorders').set({ state, heartbeat_at: sql<Date>`now()` }).where('id', '=', this.info.id).where('instance_id', '=', this.info.instanceId).execute();
    this.logger.warn({ recorderId: this.info.id, state }, state === 'draining' ? 'recorder draining: SFUs move its tracks away' : 'recorder active again');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    await this.beating;
    await this.db
      .deleteFrom('recorders')
      .where('id', '=', this.info.id)
      .where('instance_id', '=', this.info.instanceId)
      .execute()
      .catch((err: unknown) => this.logger.warn({ err }, 'could not remove this recorder from the registry'));
  }
}
