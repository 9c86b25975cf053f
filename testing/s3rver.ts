import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3ArtifactStorage } from '../services/lib/storage/s3-storage.ts';

/**
 * A fake S3 (s3rver) on 127.0.0.1 for tests and benches that need an S3 endpoint but not Object
 * Lock: it keeps its objects in `directory`, so stopping it and starting another on the same port
 * and directory is a storage outage and its end.
 */
interface S3rverServer {
  run(): Promise<AddressInfo>;
  close(): Promise<void>;
}
type S3rverCtor = new (opts: { address: string; port: number; silent: boolean; directory: string; resetOnClose?: boolean }) => S3rverServer;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;

/** s3rver's built-in account. */
export const S3RVER_CREDS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface TestS3 {
  endpoint: string;
  port: number;
  /** A storage on `bucket` (created on first use). */
  storage(bucket: string): Promise<S3ArtifactStorage>;
  /** The environment a service needs to use `bucket` on this server (STORAGE_BACKEND=s3). */
  env(bucket: string): Record<string, string>;
  stop(): Promise<void>;
}

export async function startS3rver(directory: string, port = 0): Promise<TestS3> {
  const server = new S3rver({ address: '127.0.0.1', port, silent: true, directory });
  const addr = await server.run();
  const endpoint = `http://127.0.0.1:${addr.port}`;
  const buckets = new Set<string>();
  let stopped = false;
  return {
    endpoint,
    port: addr.port,
    async storage(bucket) {
      if (!buckets.has(bucket)) {
        const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: S3RVER_CREDS });
        try {
          await client.send(new CreateBucketCommand({ Bucket: bucket })).catch((err: { name?: string }) => {
            if (err.name !== 'BucketAlreadyOwnedByYou' && err.name !== 'BucketAlreadyExists') throw err;
          });
        } finally {
          client.destroy();
        }
        buckets.add(bucket);
      }
      return new S3ArtifactStorage({ bucket, region: 'us-east-1', endpoint, forcePathStyle: true, credentials: S3RVER_CREDS });
    },
    env(bucket) {
      return { STORAGE_BACKEND: 's3', S3_ENDPOINT: endpoint, S3_BUCKET: bucket, S3_REGION: 'us-east-1', S3_FORCE_PATH_STYLE: 'true', S3_ACCESS_KEY_ID: S3RVER_CREDS.accessKeyId, S3_SECRET_ACCESS_KEY: S3RVER_CREDS.secretAccessKey };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.close();
    },
  };
}
