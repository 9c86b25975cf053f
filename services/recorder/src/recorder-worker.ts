import { monitorEventLoopDelay } from 'node:perf_hooks';
import { IPC_VERSION, ToWorkerSchema, type ToSupervisor } from '../../lib/contracts/recorder-ipc.ts';
import { SrtpReceiver } from '../../lib/rtp/srtp.ts';
import { NativeTracks } from './native-tracks.ts';
import type { DropReason } from './packet-classifier.ts';
import { TrackRecorder, bindPortPair } from './track-recorder.ts';

/**
 * A recorder worker process: owns the UDP sockets and open segment files of the tracks
 * the supervisor assigns to it, within its own slice of the port range. Started by
 * the supervisor with RECORDER_WORKER_* variables; exits when the supervisor goes away.
 */
const ip = process.env.RECORDER_WORKER_IP ?? '127.0.0.1';
const minPort = Number(process.env.RECORDER_WORKER_MIN_PORT);
const maxPort = Number(process.env.RECORDER_WORKER_MAX_PORT);
const maxPacketBytes = Number(process.env.RECORDER_WORKER_MAX_PACKET_BYTES ?? 1500);
const fsyncIntervalMs = Number(process.env.RECORDER_WORKER_FSYNC_MS ?? 1000);
const segmentSeconds = Number(process.env.RECORDER_WORKER_SEGMENT_SECONDS ?? 60);
const rxBin = process.env.RECORDER_WORKER_RX === 'native' ? process.env.RECORDER_WORKER_RX_BIN : undefined;
const drainMs = Number(process.env.RECORDER_WORKER_RX_DRAIN_MS ?? 20);

const tracks = new Map<string, TrackRecorder>();
const taken = new Set<number>();
const ports = new Map<string, number>();
const dropped: Partial<Record<DropReason, number>> = {};
// Event-loop delay: how late this worker gets to its sockets (reported in 'stats').
// Samples include the sampling interval itself, which is subtracted when reported.
// On the native path no packet passes through this loop, so a coarser timer (fewer wake-ups, a
// few ms of CPU a second less) still shows any lag that matters against the 100 ms goal.
const LAG_RESOLUTION_MS = rxBin ? 50 : 10;
const loopDelay = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
loopDelay.enable();
let lagWindowStart = performance.now();

function send(m: ToSupervisor): void {
  if (process.connected) process.send?.(m);
}

/** RECORDER_RX=native: recorder-rx owns the sockets and files; this process only relays. */
const native = rxBin ? new NativeTracks({ bin: rxBin, ip, minPort, maxPort, maxPacketBytes, fsyncIntervalMs, segmentSeconds, drainMs }, send) : undefined;

process.on('message', (raw) => {
  onMessage(raw).catch((err: unknown) => {
    // A worker in an unknown state must not go on recording: exit, and the supervisor restarts it and recovers its segments.
    process.stderr.write(`recorder worker: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
});

async function onMessage(raw: unknown): Promise<void> {
  const parsed = ToWorkerSchema.safeParse(raw);
  if (!parsed.success) return;
  const m = parsed.data;
  if (m.t === 'stats') return sendStats(m.resetLag === true);
  if (native) return m.t === 'stop' ? native.stop(m) : native.start(m);
  if (m.t === 'stop') {
    const key = `${m.session}/${m.track}`;
    const rec = tracks.get(key);
    if (!rec) return;
    tracks.delete(key);
    const entry = rec.stop(m.reason);
    taken.delete(ports.get(key)!);
    ports.delete(key);
    if (entry) send({ t: 'sealed', v: IPC_VERSION, session: m.session, track: m.track, entry, trackOpen: false });
    return;
  }
  const { req } = m;
  const key = `${req.session}/${req.track}`;
  try {
    if (tracks.has(key)) throw Object.assign(new Error(`track ${req.track} is already recording`), { code: 'TRACK_EXISTS' });
    const pair = await bindPortPair(ip, minPort, maxPort, taken);
    const rec = new TrackRecorder(req, pair.rtp, pair.rtcp, {
      dir: m.dir,
      segment: m.segment,
      maxPacketBytes,
      fsyncIntervalMs,
      segmentSeconds,
      ...(m.srtpKey ? { srtp: new SrtpReceiver('AES_CM_128_HMAC_SHA1_80', Buffer.from(m.srtpKey, 'base64')) } : {}),
      onDrop: (reason) => (dropped[reason] = (dropped[reason] ?? 0) + 1),
      onSealed: (entry, trackOpen) => {
        send({ t: 'sealed', v: IPC_VERSION, session: req.session, track: req.track, entry, trackOpen });
        if (!trackOpen && tracks.get(key) === rec) {
          tracks.delete(key);
          taken.delete(pair.rtpPort);
          ports.delete(key);
        }
      },
    });
    tracks.set(key, rec);
    ports.set(key, pair.rtpPort);
    send({ t: 'started', v: IPC_VERSION, session: req.session, track: req.track, segment: m.segment, rtpPort: pair.rtpPort, rtcpPort: pair.rtcpPort });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    send({ t: 'startFailed', v: IPC_VERSION, session: req.session, track: req.track, code: e.code === 'ENOSPC' ? 'DISK_FULL' : (e.code ?? 'INTERNAL'), message: e.message });
  }
}

async function sendStats(resetLag: boolean): Promise<void> {
  let received = 0;
  let stored = 0;
  let count = tracks.size;
  let perTrackDropped: Record<string, Record<string, number>> = {};
  let droppedNow: Record<string, number> = dropped;
  let rx: { pid: number; cpu: { userUs: number; systemUs: number }; rssBytes: number; rounds: number; batches: number; datagrams: number; restarts: number } | undefined;
  const rxStats = native ? await native.stats() : undefined;
  if (native && rxStats) {
    ({ received, stored, perTrack: perTrackDropped, dropped: droppedNow, tracks: count } = rxStats);
    rx = { pid: native.pid ?? 0, cpu: rxStats.cpu, rssBytes: rxStats.rssBytes, rounds: rxStats.rounds, batches: rxStats.batches, datagrams: rxStats.datagrams, restarts: native.restartCount };
  }
  for (const [key, t] of tracks) {
    received += t.received;
    stored += t.stored;
    perTrackDropped[key] = t.dropped;
  }
  const ms = (ns: number) => (Number.isFinite(ns) && loopDelay.count > 0 ? Math.max(0, ns / 1e6 - LAG_RESOLUTION_MS) : 0);
  const lag = { p50Ms: ms(loopDelay.percentile(50)), p99Ms: ms(loopDelay.percentile(99)), maxMs: ms(loopDelay.max), meanMs: ms(loopDelay.mean), windowMs: performance.now() - lagWindowStart };
  const cpu = process.cpuUsage();
  send({ t: 'stats', v: IPC_VERSION, tracks: count, received, stored, dropped: droppedNow, perTrackDropped, cpu: { userUs: cpu.user, systemUs: cpu.system }, rssBytes: process.memoryUsage.rss(), lag, ...(rx ? { rx } : {}) });
  if (resetLag) {
    loopDelay.reset();
    lagWindowStart = performance.now();
  }
}

// The supervisor is gone (crash or kill -9): seal what we have and leave. The files
// stay consistent either way; sealing just saves the supervisor a recovery step.
process.on('disconnect', () => {
  for (const rec of tracks.values()) rec.stop('recorder-restart');
  if (!native) process.exit(0);
  void native.shutdown('recorder-restart').finally(() => process.exit(0));
});

if (native) {
  native.ready.then(
    () => send({ t: 'ready', v: IPC_VERSION }),
    (err: unknown) => {
      process.stderr.write(`recorder worker: recorder-rx does not start: ${String(err)}\n`);
      process.exit(1);
    },
  );
} else {
  send({ t: 'ready', v: IPC_VERSION });
}
