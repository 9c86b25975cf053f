import { existsSync } from 'node:fs';
import path from 'node:path';
import { IPC_VERSION, type ToSupervisor, type ToWorker } from '../../lib/contracts/recorder-ipc.ts';
import { RECORDING_FORMAT_VERSION, TrackHeaderSchema, type SegmentEntry } from '../../lib/contracts/recording.ts';
import { PART_SUFFIX, segmentFileName } from '../../lib/recording/session-dir.ts';
import { NativeRx, type NativeRxOptions, type RxStats } from './native-rx.ts';
import { sealOrphan } from './recording-session.ts';
import { nowUs } from './track-recorder.ts';

type StartMessage = Extract<ToWorker, { t: 'start' }>;
type StopMessage = Extract<ToWorker, { t: 'stop' }>;

interface OpenTrack {
  session: string;
  track: string;
  dir: string;
  /** The segment being written now. */
  segment: number;
  lastSealed: SegmentEntry | undefined;
}

/**
 * A worker's tracks on the native receive path: the same supervisor messages as the
 * dgram path (track-recorder.ts), with recorder-rx owning sockets and files. When
 * recorder-rx dies, its open segments are sealed exactly as a recorder restart seals
 * them after kill -9 (sealOrphan, end reason "recorder-crash") and a new one is started.
 */
export class NativeTracks {
  private rx!: NativeRx;
  private readonly tracks = new Map<string, OpenTrack>();
  private restarts = 0;
  /** Counters of recorder-rx processes that died (each new one starts at zero): reported totals never go back. */
  private readonly carried = { received: 0, stored: 0, dropped: {} as Record<string, number> };
  private lastStats: RxStats | undefined;

  constructor(
    private readonly opts: Omit<NativeRxOptions, 'onMessage' | 'onExit'>,
    private readonly send: (m: ToSupervisor) => void,
  ) {
    this.spawn();
  }

  get ready(): Promise<number> {
    return this.rx.ready;
  }

  get pid(): number | undefined {
    return this.rx.pid;
  }

  get restartCount(): number {
    return this.restarts;
  }

  private spawn(): void {
    this.rx = new NativeRx({
      ...this.opts,
      onMessage: (m) => {
        if (m.type === 'sealed') return this.onSealed(m.id, m.entry, m.trackOpen);
        if (m.type === 'trackFailed') {
          // The next segment could not be opened: the track ended with its last sealed segment.
          const t = this.tracks.get(m.id);
          this.tracks.delete(m.id);
          if (t?.lastSealed) this.send({ t: 'sealed', v: IPC_VERSION, session: t.session, track: t.track, entry: t.lastSealed, trackOpen: false });
          return;
        }
        if (m.type === 'error') process.stderr.write(`recorder worker: recorder-rx: ${m.code}: ${m.message}\n`);
      },
      onExit: (code, signal) => this.recover(code, signal),
    });
  }

  private onSealed(id: string, entry: SegmentEntry, trackOpen: boolean): void {
    const t = this.tracks.get(id);
    if (!t) return;
    if (trackOpen) {
      t.segment = entry.segment + 1;
      t.lastSealed = entry;
    } else {
      this.tracks.delete(id);
    }
    this.send({ t: 'sealed', v: IPC_VERSION, session: t.session, track: t.track, entry, trackOpen });
  }

  private recover(code: number | null, signal: NodeJS.Signals | null): void {
    process.stderr.write(`recorder worker: recorder-rx exited (code ${code}, signal ${signal}); sealing its open segments and restarting it\n`);
    this.restarts++;
    // What it counted since its last stats answer is lost with it.
    if (this.lastStats) {
      this.carried.received += this.lastStats.received;
      this.carried.stored += this.lastStats.stored;
      for (const [k, n] of Object.entries(this.lastStats.dropped)) this.carried.dropped[k] = (this.carried.dropped[k] ?? 0) + n;
      this.lastStats = undefined;
    }
    for (const [id, t] of this.tracks) {
      this.tracks.delete(id);
      const final = path.join(t.dir, segmentFileName(t.track, t.segment));
      const part = `${final}${PART_SUFFIX}`;
      const entry = existsSync(part) ? sealOrphan(part, t.segment, true) : existsSync(final) ? sealOrphan(final, t.segment, false) : undefined;
      const closing = entry ?? t.lastSealed;
      if (closing) this.send({ t: 'sealed', v: IPC_VERSION, session: t.session, track: t.track, entry: closing, trackOpen: false });
    }
    this.spawn();
    this.rx.ready.catch((err: unknown) => {
      // Cannot even start: leave, and the supervisor restarts the whole worker.
      process.stderr.write(`recorder worker: recorder-rx does not start: ${String(err)}\n`);
      process.exit(1);
    });
  }

  async start(m: StartMessage): Promise<void> {
    const { req } = m;
    const id = `${req.session}/${req.track}`;
    if (this.tracks.has(id)) {
      this.send({ t: 'startFailed', v: IPC_VERSION, session: req.session, track: req.track, code: 'TRACK_EXISTS', message: `track ${req.track} is already recording` });
      return;
    }
    // Validated here in full once; recorder-rx puts segment, ssrc and start time first for each segment.
    const full = TrackHeaderSchema.parse({
      format: 'verbatim-rtp',
      version: RECORDING_FORMAT_VERSION,
      room: req.room,
      session: req.session,
      track: req.track,
      segment: m.segment,
      participant: req.participant,
      kind: req.kind,
      codec: req.codec,
      ssrc: req.ssrc,
      headerExtensions: req.headerExtensions,
      startedAt: new Date().toISOString(),
      startedAtUs: nowUs(),
      consent: req.consent,
    });
    const { segment: _s, ssrc: _x, startedAt: _a, startedAtUs: _u, ...rest } = full;
    await this.rx.ready;
    const a = await this.rx.start({ id, dir: m.dir, track: req.track, segment: m.segment, ssrc: req.ssrc, payloadType: req.codec.payloadType, header: JSON.stringify(rest), ...(m.srtpKey ? { srtpKey: m.srtpKey } : {}) });
    if (a.type === 'startFailed') {
      this.send({ t: 'startFailed', v: IPC_VERSION, session: req.session, track: req.track, code: a.code, message: a.message });
      return;
    }
    this.tracks.set(id, { session: req.session, track: req.track, dir: m.dir, segment: a.segment, lastSealed: undefined });
    this.send({ t: 'started', v: IPC_VERSION, session: req.session, track: req.track, segment: a.segment, rtpPort: a.rtpPort, rtcpPort: a.rtcpPort });
  }

  async stop(m: StopMessage): Promise<void> {
    const id = `${m.session}/${m.track}`;
    const t = this.tracks.get(id);
    if (!t) return;
    const sealed = await this.rx.stop(id, m.reason, true);
    if (!sealed || this.tracks.get(id) !== t) return;
    this.tracks.delete(id);
    this.send({ t: 'sealed', v: IPC_VERSION, session: m.session, track: m.track, entry: sealed.entry, trackOpen: false });
  }

  /** recorder-rx's stats, with the counts of earlier processes (before a restart) added in. */
  async stats(): Promise<RxStats | undefined> {
    const s = await this.rx.stats();
    if (!s) return undefined;
    this.lastStats = s;
    const dropped = { ...this.carried.dropped };
    for (const [k, n] of Object.entries(s.dropped)) dropped[k] = (dropped[k] ?? 0) + n;
    return { ...s, received: s.received + this.carried.received, stored: s.stored + this.carried.stored, dropped };
  }

  /** Seals every open segment (the supervisor is gone or shutting down). */
  async shutdown(reason: string): Promise<void> {
    await this.rx.shutdown(reason);
  }
}
