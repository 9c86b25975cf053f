import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { uploadSegment } from '../../services/recorder/src/segment-uploader.ts';
import { rawSegmentKey } from '../../services/lib/storage/artifact-keys.ts';
import type { ArtifactStorage } from '../../services/lib/storage/artifact-storage.ts';
import { S3ArtifactStorage } from '../../services/lib/storage/s3-storage.ts';
import { encryptedBenchStorage } from './encrypt-overhead.ts';
import { onCleanup, terminate } from './children.ts';
import { atMost, repoRoot, reportOnly, round, type Metric } from './results.ts';

/**
 * Metric 5 of the recorder suite (bench/recorder.ts), upload_mb_per_cpu_s: raw segments through the recorder's own upload path (segment-uploader.ts
 * uploadSegment: S3 put with its SHA-256, then a full read-back checked against the manifest's hash),
 * two at a time as the uploader runs them, to s3rver in its own process. Only this process's CPU is
 * counted: the recorder host's cost, not the fake S3's.
 */
export interface UploadBenchResult {
  segments: number;
  segmentMb: number;
  totalMb: number;
  cpuS: number;
  wallS: number;
  mbPerCpuS: number;
  mbPerWallS: number;
}

const CREDS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const BUCKET = 'verbatim-bench-raw';

/** s3rver in a child process (its CPU stays out of the measurement); resolves its endpoint. */
async function startS3rverProcess(dir: string): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const code = `const S3rver = require('s3rver'); new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: ${JSON.stringify(dir)} }).run().then((a) => console.log('PORT ' + a.port));`;
  const child = spawn(process.execPath, ['-e', code], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
  const stop = onCleanup('s3rver', () => terminate(child), () => child.kill('SIGKILL'));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (c) => reject(new Error(`s3rver exited with ${c}`)));
  });
  return { endpoint: `http://127.0.0.1:${port}`, stop };
}

export async function measureRawUpload(work: string, opts: { segments: number; segmentMb: number; encrypt?: boolean }): Promise<UploadBenchResult> {
  // Each run in its own directories (the encrypted comparison runs it again).
  const run = `${opts.encrypt ? '-encrypted' : ''}-${randomBytes(4).toString('hex')}`;
  const dir = path.join(work, `raw-upload${run}`);
  mkdirSync(dir, { recursive: true });
  // Segment files as the recorder leaves them: random bytes (media does not compress), with their manifest hash.
  const files = Array.from({ length: opts.segments }, (_, i) => {
    const file = path.join(dir, `mic-${i}.vrtp`);
    const data = randomBytes(Math.round(opts.segmentMb * 1024 * 1024));
    writeFileSync(file, data);
    return { file, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') };
  });
  const s3 = await startS3rverProcess(path.join(work, `s3rver${run}`));
  let enc: Awaited<ReturnType<typeof encryptedBenchStorage>> | undefined;
  try {
    const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: CREDS });
    await client.send(new CreateBucketCommand({ Bucket: BUCKET }));
    client.destroy();
    const s3Storage = new S3ArtifactStorage({ bucket: BUCKET, region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: CREDS });
    // With encryption: the recorder's storage with ENCRYPTION_AT_REST=on (the put encrypts, the read-back decrypts).
    enc = opts.encrypt ? await encryptedBenchStorage(s3Storage) : undefined;
    const storage: ArtifactStorage = enc?.storage ?? s3Storage;
    const scope = { encryptFor: { session: 'sess', participant: 'p1' } };
    // One warm-up segment (connection set-up, JIT, the data key) outside the measurement.
    await uploadSegment(storage, rawSegmentKey('bench', 'warm', 'mic-0.vrtp'), files[0]!.file, files[0]!, scope);
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    let next = 0;
    const lane = async () => {
      for (let i = next++; i < files.length; i = next++) await uploadSegment(storage, rawSegmentKey('bench', 'sess', path.basename(files[i]!.file)), files[i]!.file, files[i]!, scope);
    };
    await Promise.all([lane(), lane()]);
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(cpu0);
    s3Storage.destroy();
    const cpuS = (c.user + c.system) / 1e6;
    const totalMb = files.reduce((a, f) => a + f.bytes, 0) / (1024 * 1024);
    return { segments: files.length, segmentMb: opts.segmentMb, totalMb, cpuS, wallS, mbPerCpuS: totalMb / cpuS, mbPerWallS: totalMb / wallS };
  } finally {
    await enc?.close();
    await s3.stop();
  }
}

/** Segments uploaded in the full and the quick run (MiB each: a minute of 720p video is ~8). */
const PLAN = { full: { segments: 32, segmentMb: 8 }, quick: { segments: 6, segmentMb: 3 } };

/** The recorder suite's metric 5 (upload_mb_per_cpu_s), run as one of its measurements. */
export async function benchRawUpload(ctx: {
  attempt: (name: string, fn: () => Promise<void>) => Promise<void>;
  metrics: Record<string, Metric>;
  details: Record<string, unknown>;
  work: string;
  quick: boolean;
}): Promise<void> {
  await ctx.attempt('raw-upload', async () => {
    const r = await measureRawUpload(ctx.work, ctx.quick ? PLAN.quick : PLAN.full);
    ctx.details.rawUpload = r;
    // Report only: the issue asks for the number, with no goal.
    ctx.metrics.upload_mb_per_cpu_s = reportOnly(
      round(r.mbPerCpuS, 1),
      'MiB/CPU-s',
      `${r.segments} raw segments × ${r.segmentMb} MiB to s3rver (own process), two at a time, each put and read back against its SHA-256: ${round(r.cpuS, 2)} CPU-s of the uploading process, ${round(r.mbPerWallS, 1)} MiB/s wall`,
    );
  });
  await ctx.attempt('raw-upload-encrypted', async () => {
    const plan = ctx.quick ? PLAN.quick : PLAN.full;
    // Plain and encrypted alternately, best of two each (one each in a quick run): the difference is the encryption, not the machine's noise.
    const plain = [ctx.details.rawUpload as UploadBenchResult | undefined, ...(ctx.quick ? [] : [await measureRawUpload(ctx.work, plan)])].filter((x): x is UploadBenchResult => x !== undefined);
    const encrypted = [await measureRawUpload(ctx.work, { ...plan, encrypt: true }), ...(ctx.quick ? [] : [await measureRawUpload(ctx.work, { ...plan, encrypt: true })])];
    const p = Math.min(...plain.map((x) => x.cpuS));
    const e = Math.min(...encrypted.map((x) => x.cpuS));
    ctx.details.rawUploadEncrypted = { plainCpuS: plain.map((x) => round(x.cpuS, 3)), encryptedCpuS: encrypted.map((x) => round(x.cpuS, 3)) };
    ctx.metrics.encrypt_overhead_pct = atMost(
      round(((e - p) / p) * 100, 1),
      10,
      '%',
      `extra CPU of the recorder's raw upload (put + read-back check) with ENCRYPTION_AT_REST=on: ${round(e, 2)} vs ${round(p, 2)} CPU-s for ${plan.segments} × ${plan.segmentMb} MiB (best of ${ctx.quick ? 1 : 2} each; AES-256-GCM in 64 KiB chunks, envelope spooled next to the segment, decrypted on read-back); the recording path itself (RTP → local spool) is unchanged`,
    );
    const mib = plan.segments * plan.segmentMb;
    ctx.metrics.encrypt_cpu_ms_per_mib = reportOnly(
      round(((e - p) * 1000) / mib, 2),
      'CPU-ms/MiB',
      `the same extra CPU per MiB uploaded: a track-minute of 1 Mb/s video is ~7.2 MiB, of Opus audio ~0.3 MiB; encrypt + spool write/read + ciphertext hash on put, header read + key lookup + decrypt on the read-back`,
    );
  });
}
