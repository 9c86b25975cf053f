import type { Db } from '../../../db/database.ts';
import type { StartTrackRequest, TimelineEvent } from '../../lib/contracts/recorder-control.ts';
import type { SegmentEntry } from '../../lib/contracts/recording.ts';
import type { Logger } from '../../lib/logger.ts';
import { EPOCH_SPAN, LiveSessionStore } from './live-session-store.ts';
import { foldPoolState } from './pool-seal.ts';
import { rawSegmentKey, rawSegmentPrefix } from '../../lib/storage/artifact-keys.ts';
import type { ArtifactStorage } from '../../lib/storage/artifact-storage.ts';
import type { RecordingSession } from './recording-session.ts';

/**
 * The supervisor's side of the recorder pool (issue 15): what this recorder journals of its
 * sessions is also written to the shared database (live-session-store.ts), off the request and
 * packet paths and in order per session, so another recorder can seal a session when this one
 * is gone; and what other recorders wrote is folded in when this one seals. Without the database
 * the recorder records as before the pool (its journal has everything).
 */
export class PoolSessions {
  private readonly store: LiveSessionStore;
  /** Which copy (RECORDER_REPLICAS) each open session/track records. */
  private readonly trackCopy = new Map<string, number>();
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly db: Db,
    readonly recorderId: string,
    /** A recorder whose heartbeat is older than this is dead (its open segments are sealed by the sealer). */
    private readonly deadAfterMs: number,
    private readonly logger: Logger,
    /** Where raw segments are uploaded (RECORDER_UPLOAD_RAW): a dead recorder's uploads are found there. */
    private readonly storage?: ArtifactStorage,
  ) {
    this.store = new LiveSessionStore(db);
  }

  /** Events into the session (its journal) and into the pool's copy of its timeline, participants with them (consent). */
  events(s: RecordingSession, events: TimelineEvent[]): void {
    s.addEvents(events);
    this.write(s.id, 'events', async () => {
      await this.store.addEvents(s.id, events);
      await this.store.putParticipants(s.id, [...s.participants.values()]);
    });
  }

  /**
   * The segment number a track starts at here. A track this recorder holds for the first time in
   * this session claims a placement (an epoch) in the database, so recorders holding one track one
   * after another (failover, drain) or at once (replicas) never number a segment alike; a track it
   * held before goes on with its own numbers.
   */
  async placeTrack(s: RecordingSession, req: StartTrackRequest, localNext: number): Promise<number> {
    const copy = req.copy ?? 0;
    this.trackCopy.set(`${s.id}/${req.track}`, copy);
    const participant = s.participants.get(req.participant.id)!;
    let segment = localNext;
    try {
      if (localNext === 0) segment = (await this.store.claimPlacement(s.id, req.track, this.recorderId, copy, s.dir)) * EPOCH_SPAN;
      this.write(s.id, 'track', () => this.store.putTrack(s.id, req, participant));
    } catch (err) {
      this.logger.error({ err, session: s.id, track: req.track }, 'could not claim a track placement in the database: numbering segments locally');
    }
    return segment;
  }

  /** A segment a worker sealed: marked with this recorder (and copy), and written to the pool. */
  sealedSegment(s: RecordingSession | undefined, track: string, entry: SegmentEntry): SegmentEntry {
    const copy = s ? (this.trackCopy.get(`${s.id}/${track}`) ?? 0) : 0;
    const marked = { ...entry, recorder: this.recorderId, ...(copy > 0 ? { copy } : {}) };
    if (s) this.write(s.id, 'segment', () => this.store.putSegment(s.id, track, this.recorderId, s.dir, marked));
    return marked;
  }

  /** Resolves once everything written so far for the session is in the database (or failed, logged). */
  async settled(session: string): Promise<void> {
    await this.chains.get(session);
  }

  /** Whether the database holds live state of an unsealed session (recorded by other recorders). */
  async held(session: string): Promise<boolean> {
    try {
      return (await this.store.load(session)) !== undefined;
    } catch {
      return false;
    }
  }

  /** What the other recorders of the pool hold of this session, folded into it before it is sealed. */
  async fold(s: RecordingSession): Promise<void> {
    await this.settled(s.id);
    try {
      const live = await this.store.load(s.id);
      if (!live) return;
      const alive = await this.db.selectFrom('recorders').select('id').where('heartbeat_at', '>', new Date(Date.now() - this.deadAfterMs)).execute();
      // Segments another recorder sealed and uploaded after it wrote them to the database (the upload
      // is recorded in its own manifest, which died with it): their copies under the raw prefix.
      const stored = new Map<string, number>();
      if (this.storage) {
        for (const key of await this.storage.list(rawSegmentPrefix(s.room, s.id)).catch(() => [])) {
          // An upload cut off by the host's death can leave an object of the wrong size: only complete copies count.
          const st = await this.storage.stat(key).catch(() => undefined);
          if (st) stored.set(key, st.bytes);
        }
      }
      const storedKey = (file: string, bytes: number) => {
        const key = rawSegmentKey(s.room, s.id, file);
        return stored.get(key) === bytes ? key : undefined;
      };
      const r = foldPoolState(s, live, { recorderId: this.recorderId, liveRecorders: new Set(alive.map((a) => a.id)), storedKey }, this.logger);
      if (r.imported > 0) this.logger.info({ session: s.id, imported: r.imported }, "sealing with other recorders' segments");
    } catch (err) {
      // The database is down: seal what this recorder has (its journal), as before the pool.
      this.logger.error({ err, session: s.id }, "could not read the pool state of the session: sealing with this recorder's part only");
    }
  }

  /** The session is sealed (its rows are the sealed tables now) or released: its live state goes. */
  async forget(session: string, opts: { clear: boolean }): Promise<void> {
    await this.settled(session);
    this.chains.delete(session);
    for (const k of this.trackCopy.keys()) if (k.startsWith(`${session}/`)) this.trackCopy.delete(k);
    if (opts.clear) await this.store.clear(session).catch((err: unknown) => this.logger.warn({ err, session }, 'could not clear the live session rows'));
  }

  private write(session: string, what: string, fn: () => Promise<void>): void {
    const next = (this.chains.get(session) ?? Promise.resolve()).then(fn).catch((err: unknown) => this.logger.error({ err, session, what }, 'could not write session state to the database: another recorder could not seal it'));
    this.chains.set(session, next);
  }
}
