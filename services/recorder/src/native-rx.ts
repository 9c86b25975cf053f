import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { FromRxSchema, RX_PROTOCOL_VERSION, type FromRx, type ToRx } from '../../lib/contracts/recorder-rx.ts';

type Answer<T extends FromRx['type']> = Extract<FromRx, { type: T }>;
export type RxStats = Answer<'stats'>;

export interface NativeRxOptions {
  bin: string;
  ip: string;
  minPort: number;
  maxPort: number;
  maxPacketBytes: number;
  fsyncIntervalMs: number;
  segmentSeconds: number;
  drainMs: number;
  /** Messages nobody asked for: segments sealed by rotation, SSRC change or a failed write. */
  onMessage: (m: FromRx) => void;
  /** The process ended without being asked to. */
  onExit: (code: number | null, signal: NodeJS.Signals | null) => void;
}

/**
 * A recorder-rx process (services/recorder/native) seen from its worker: typed requests
 * over stdin, validated answers from stdout. Each request gets the next answer of its
 * kind for its track (the process answers in order), so callers just await.
 */
export class NativeRx {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<string, ((m: FromRx | undefined) => void)[]>();
  private statsSeq = 0;
  private exited = false;
  private closing = false;
  readonly ready: Promise<number>;

  constructor(private readonly opts: NativeRxOptions) {
    this.child = spawn(opts.bin, [], {
      env: {
        PATH: process.env.PATH ?? '',
        RECORDER_RX_IP: opts.ip,
        RECORDER_RX_MIN_PORT: String(opts.minPort),
        RECORDER_RX_MAX_PORT: String(opts.maxPort),
        RECORDER_RX_MAX_PACKET_BYTES: String(opts.maxPacketBytes),
        RECORDER_RX_FSYNC_MS: String(opts.fsyncIntervalMs),
        RECORDER_RX_SEGMENT_SECONDS: String(opts.segmentSeconds),
        RECORDER_RX_DRAIN_MS: String(opts.drainMs),
      },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.ready = new Promise((resolve, reject) => {
      this.expect('ready:', (m) => (m ? resolve((m as Answer<'ready'>).pid) : reject(new Error('recorder-rx exited before it was ready'))));
      this.child.once('error', reject);
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.onLine(line));
    this.child.stdin!.on('error', () => {}); // a dead process shows as 'exit'
    this.child.on('exit', (code, signal) => {
      if (this.exited) return;
      this.exited = true;
      this.failPending();
      if (!this.closing) opts.onExit(code, signal);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private expect(key: string, fn: (m: FromRx | undefined) => void): void {
    const list = this.waiting.get(key) ?? [];
    list.push(fn);
    this.waiting.set(key, list);
  }

  private settle(key: string, m: FromRx): boolean {
    const list = this.waiting.get(key);
    const fn = list?.shift();
    if (list?.length === 0) this.waiting.delete(key);
    fn?.(m);
    return fn !== undefined;
  }

  private onLine(line: string): void {
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch {
      raw = undefined;
    }
    const parsed = FromRxSchema.safeParse(raw);
    if (!parsed.success) {
      process.stderr.write(`recorder worker: bad message from recorder-rx: ${line.slice(0, 200)}\n`);
      return;
    }
    const m = parsed.data;
    switch (m.type) {
      case 'ready':
        this.settle('ready:', m);
        return;
      case 'started':
      case 'startFailed':
        this.settle(`start:${m.id}`, m);
        return;
      case 'stats':
        this.settle(`stats:${m.seq}`, m);
        return;
      case 'sealed':
        // A stop's answer is its track's final seal; any other seal is news.
        if (!m.trackOpen && this.settle(`stop:${m.id}`, m)) return;
        this.opts.onMessage(m);
        return;
      default:
        this.opts.onMessage(m);
    }
  }

  private send(m: ToRx): void {
    if (this.exited) return;
    this.child.stdin!.write(`${JSON.stringify(m)}\n`);
  }

  start(m: Omit<Extract<ToRx, { type: 'start' }>, 'v' | 'type'>): Promise<Answer<'started'> | Answer<'startFailed'>> {
    return new Promise((resolve) => {
      this.expect(`start:${m.id}`, (a) => resolve((a as Answer<'started'> | Answer<'startFailed'> | undefined) ?? { v: RX_PROTOCOL_VERSION, type: 'startFailed', id: m.id, code: 'INTERNAL', message: 'recorder-rx exited' }));
      this.send({ v: RX_PROTOCOL_VERSION, type: 'start', ...m });
    });
  }

  /** Resolves with the final seal, or undefined when the track had already ended. */
  stop(id: string, reason: string, hasTrack: boolean): Promise<Answer<'sealed'> | undefined> {
    if (!hasTrack || this.exited) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.expect(`stop:${id}`, (a) => resolve(a as Answer<'sealed'> | undefined));
      this.send({ v: RX_PROTOCOL_VERSION, type: 'stop', id, reason });
    });
  }

  stats(): Promise<RxStats | undefined> {
    if (this.exited) return Promise.resolve(undefined);
    const seq = ++this.statsSeq;
    return new Promise((resolve) => {
      this.expect(`stats:${seq}`, (a) => resolve(a as RxStats | undefined));
      this.send({ v: RX_PROTOCOL_VERSION, type: 'stats', seq });
    });
  }

  /** Seals everything with `reason` and waits for the process to leave. */
  shutdown(reason: string): Promise<void> {
    if (this.exited) return Promise.resolve();
    this.closing = true;
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.send({ v: RX_PROTOCOL_VERSION, type: 'shutdown', reason });
      this.child.stdin!.end();
    });
  }

  /** Pending requests of a process that died: none will be answered. */
  private failPending(): void {
    const lists = [...this.waiting.values()];
    this.waiting.clear();
    for (const list of lists) for (const fn of list) fn(undefined);
  }
}
