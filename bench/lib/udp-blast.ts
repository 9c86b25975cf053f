import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cacheDir, repoRoot } from './results.ts';
import { killNow, onCleanup } from './children.ts';

const source = path.join(repoRoot, 'bench', 'tools', 'udp-blast.c');
export const blasterBin = path.join(cacheDir, 'udp-blast');

/** Compiles bench/tools/udp-blast.c with gcc -O2 when the binary is missing or older than the source. */
export function ensureBlaster(): string {
  mkdirSync(cacheDir, { recursive: true });
  if (!existsSync(blasterBin) || statSync(blasterBin).mtimeMs < statSync(source).mtimeMs) {
    execFileSync('gcc', ['-O2', '-Wall', '-o', blasterBin, source], { stdio: 'inherit' });
  }
  return blasterBin;
}

// ---- RTP templates: real Opus / VP8 packets captured once from ffmpeg ----

export interface TemplateSpec {
  name: string;
  kind: 'audio' | 'video';
  clockRate: number;
  /** ffmpeg arguments between the input and the RTP output. */
  ffmpegArgs: string[];
  description: string;
}

export const TEMPLATE_SPECS: TemplateSpec[] = [
  {
    name: 'opus48k',
    kind: 'audio',
    clockRate: 48000,
    description: 'Opus 48 kb/s CBR, 20 ms frames: 50 pps, 132 B packets',
    ffmpegArgs: ['-f', 'lavfi', '-i', 'sine=frequency=330:sample_rate=48000,volume=0.5[a];anoisesrc=r=48000:a=0.05[n];[a][n]amix', '-t', '10', '-c:a', 'libopus', '-ac', '2', '-b:a', '48k', '-vbr', 'off', '-frame_duration', '20'],
  },
  {
    name: 'vp8hi',
    kind: 'video',
    clockRate: 90000,
    description: 'VP8 720p30 ~2.3 Mb/s, keyframe every 2 s, 1100 B packetization',
    ffmpegArgs: ['-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-t', '10', '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '2300k', '-minrate', '2300k', '-maxrate', '2300k', '-g', '60', '-pix_fmt', 'yuv420p'],
  },
  {
    name: 'vp8lo',
    kind: 'video',
    clockRate: 90000,
    description: 'VP8 640p30 ~1.2 Mb/s, keyframe every 2 s, 1100 B packetization',
    ffmpegArgs: ['-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '10', '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '1200k', '-minrate', '1200k', '-maxrate', '1200k', '-g', '60', '-pix_fmt', 'yuv420p'],
  },
];

export interface TemplateInfo {
  name: string;
  kind: 'audio' | 'video';
  path: string;
  packets: number;
  loopS: number;
  pps: number;
  meanBytes: number;
}

const TEMPLATE_VERSION = 3;

/**
 * Captures each template (once; cached under .cache/bench) by running ffmpeg's RTP
 * muxer into a local UDP socket in real time, and stores it as a VBT1 file for udp-blast.
 */
export async function ensureTemplates(): Promise<Record<string, TemplateInfo>> {
  const dir = path.join(cacheDir, 'templates');
  mkdirSync(dir, { recursive: true });
  const indexFile = path.join(dir, 'index.json');
  const key = JSON.stringify({ v: TEMPLATE_VERSION, specs: TEMPLATE_SPECS });
  if (existsSync(indexFile)) {
    const idx = JSON.parse(readFileSync(indexFile, 'utf8')) as { key: string; templates: Record<string, TemplateInfo> };
    if (idx.key === key && Object.values(idx.templates).every((t) => existsSync(t.path))) return idx.templates;
  }
  process.stderr.write('[bench] capturing RTP templates from ffmpeg (once, ~12 s)\n');
  const infos = await Promise.all(TEMPLATE_SPECS.map((s) => captureTemplate(s, dir)));
  const templates = Object.fromEntries(infos.map((t) => [t.name, t]));
  writeFileSync(indexFile, JSON.stringify({ key, templates }, null, 2));
  return templates;
}

async function captureTemplate(spec: TemplateSpec, dir: string): Promise<TemplateInfo> {
  const rtp = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  const rtcp = dgram.createSocket('udp4');
  await new Promise<void>((r) => rtp.bind(0, '127.0.0.1', () => r()));
  const port = rtp.address().port;
  // ffmpeg sends RTCP to port + 1; take it (and ignore it) when free.
  await new Promise<void>((r) => {
    rtcp.once('error', () => r());
    rtcp.bind(port + 1, '127.0.0.1', () => r());
  });
  const packets: Buffer[] = [];
  rtp.on('message', (m) => packets.push(Buffer.from(m)));
  const args = ['-v', 'error', '-re', ...spec.ffmpegArgs, '-payload_type', spec.kind === 'audio' ? '111' : '96', '-ssrc', '1234', '-f', 'rtp', `rtp://127.0.0.1:${port}?pkt_size=1100`];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const release = onCleanup(`ffmpeg capture ${spec.name}`, async () => killNow(child), () => killNow(child));
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  await release();
  await new Promise((r) => setTimeout(r, 200));
  rtp.close();
  try {
    rtcp.close();
  } catch {
    // not bound
  }
  if (code !== 0 || packets.length < 50) throw new Error(`ffmpeg template capture ${spec.name} failed (exit ${code}, ${packets.length} packets): ${stderr}`);
  return writeTemplate(spec, packets, path.join(dir, `${spec.name}.vbt`));
}

/** VBT1: "VBT1" u32 count u32 loop_us u32 loop_ts, then per packet u32 offset_us u16 len + bytes. */
export function writeTemplate(spec: Pick<TemplateSpec, 'name' | 'kind' | 'clockRate'>, packets: Buffer[], file: string): TemplateInfo {
  const ts = packets.map((p) => p.readUInt32BE(4));
  const ts0 = ts[0]!;
  const rel = ts.map((t) => (t - ts0) >>> 0);
  const deltas = rel.slice(1).map((r, i) => r - rel[i]!).filter((d) => d > 0).sort((a, b) => a - b);
  const frameTs = deltas[Math.floor(deltas.length / 2)] ?? Math.round(spec.clockRate / 50);
  const loopTs = rel.at(-1)! + frameTs;
  const loopUs = Math.round((loopTs / spec.clockRate) * 1e6);
  const parts: Buffer[] = [];
  const head = Buffer.alloc(16);
  head.write('VBT1', 0, 'ascii');
  head.writeUInt32LE(packets.length, 4);
  head.writeUInt32LE(loopUs, 8);
  head.writeUInt32LE(loopTs, 12);
  parts.push(head);
  let bytes = 0;
  packets.forEach((p, i) => {
    const h = Buffer.alloc(6);
    h.writeUInt32LE(Math.round((rel[i]! / spec.clockRate) * 1e6), 0);
    h.writeUInt16LE(p.length, 4);
    parts.push(h, p);
    bytes += p.length;
  });
  writeFileSync(file, Buffer.concat(parts));
  return { name: spec.name, kind: spec.kind, path: file, packets: packets.length, loopS: loopUs / 1e6, pps: packets.length / (loopUs / 1e6), meanBytes: bytes / packets.length };
}

// ---- running the blaster ----

export interface BlastTrack {
  port: number;
  ssrc: number;
  payloadType: number;
  template: string;
  /** 0: template timing; > 0: this many packets per second, evenly spaced. */
  pps?: number;
}

export interface BlastResult {
  sent: number;
  errors: number;
  tracks: number;
  elapsed_s: number;
  pps: number;
  late_max_us: number;
  late_mean_us: number;
  /** The generator's own CPU seconds (user + system, which includes loopback delivery). */
  cpu_s: number;
  perTrack?: Map<number, number>;
}

export interface RunningBlast {
  pid: number;
  done: Promise<BlastResult>;
  stop(): Promise<BlastResult>;
}

let blastSeq = 0;

/**
 * Starts udp-blast for `durationS` seconds. Tracks start at a random packet of their
 * template and a random phase so frames of different tracks do not line up.
 */
export function startBlast(templates: Record<string, TemplateInfo>, tracks: BlastTrack[], durationS: number, opts: { workDir: string; perTrack?: boolean; seed?: number; srcPort?: number }): RunningBlast {
  const bin = ensureBlaster();
  const names = [...new Set(tracks.map((t) => t.template))];
  let rnd = opts.seed ?? 1;
  const rand = () => ((rnd = (rnd * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const lines = names.map((n, i) => `template ${i} ${templates[n]!.path}`);
  for (const t of tracks) {
    const tpl = templates[t.template]!;
    const start = Math.floor(rand() * tpl.packets);
    const phase = Math.floor(rand() * (t.pps ? 1e6 / t.pps : 40_000));
    lines.push(`track ${t.port} ${t.ssrc >>> 0} ${t.payloadType} ${names.indexOf(t.template)} ${Math.ceil(t.pps ?? 0)} ${start} ${phase}`);
  }
  const id = ++blastSeq;
  const config = path.join(opts.workDir, `blast-${id}.conf`);
  writeFileSync(config, `${lines.join('\n')}\n`);
  const perTrackFile = path.join(opts.workDir, `blast-${id}.per-track`);
  const args = ['--config', config, '--duration', String(durationS), ...(opts.perTrack ? ['--per-track', perTrackFile] : []), ...(opts.srcPort ? ['--src-port', String(opts.srcPort)] : [])];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const release = onCleanup(`udp-blast ${id}`, async () => killNow(child), () => killNow(child));
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const done = new Promise<BlastResult>((resolve, reject) => {
    child.once('exit', (code) => {
      void release();
      const line = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !line.startsWith('{')) return reject(new Error(`udp-blast exited ${code}: ${err || out}`));
      const r = JSON.parse(line) as BlastResult;
      if (opts.perTrack && existsSync(perTrackFile)) {
        r.perTrack = new Map(
          readFileSync(perTrackFile, 'utf8')
            .trim()
            .split('\n')
            .map((l) => l.split(' ').map(Number) as [number, number]),
        );
      }
      resolve(r);
    });
  });
  return {
    pid: child.pid!,
    done,
    async stop() {
      child.kill('SIGTERM');
      return done;
    },
  };
}

/** A UDP port free right now on 127.0.0.1 (for --src-port or SDP receivers). */
export async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** n even/odd port pairs in [min, max] that bind right now (each checked, then released). */
export async function freeUdpPortPairs(n: number, min: number, max: number): Promise<number[]> {
  const out: number[] = [];
  const tryBind = (port: number) =>
    new Promise<dgram.Socket | undefined>((resolve) => {
      const s = dgram.createSocket('udp4');
      s.once('error', () => {
        s.close();
        resolve(undefined);
      });
      s.bind({ port, address: '127.0.0.1', exclusive: true }, () => resolve(s));
    });
  for (let port = min + (min % 2); port + 1 <= max && out.length < n; port += 2) {
    const a = await tryBind(port);
    const b = a && (await tryBind(port + 1));
    if (a && b) out.push(port);
    for (const s of [a, b]) if (s) await new Promise<void>((r) => s.close(() => r()));
  }
  if (out.length < n) throw new Error(`only ${out.length} free UDP port pairs in ${min}-${max}`);
  return out;
}
