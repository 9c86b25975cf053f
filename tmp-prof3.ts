import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase } from './db/database.ts';
import { DataKeys } from './services/lib/crypto/data-keys.ts';
import { masterKeyOf } from './services/lib/crypto/master-key.ts';
import { LocalArtifactStorage } from './services/lib/storage/artifact-storage.ts';
import { EncryptedArtifactStorage } from './services/lib/storage/encrypted-storage.ts';
const db = await openDatabase({});
const keys = new DataKeys(db, masterKeyOf(randomBytes(32)));
const dir = mkdtempSync(path.join(os.tmpdir(), 'p3-'));
const f = path.join(dir, 'f'); writeFileSync(f, randomBytes(32 << 20));
const local = new LocalArtifactStorage(path.join(dir, 'store'));
const enc = new EncryptedArtifactStorage(local, keys, { encryptWrites: true });
const cpu = async (name: string, fn: () => Promise<unknown>) => { const t = process.cpuUsage(); await fn(); const u = process.cpuUsage(t); console.log(name, (u.user + u.system) / 1e6); };
for (let i = 0; i < 2; i++) {
await cpu('plain put', () => local.put('a', f, 'x'));
await cpu('enc put', () => enc.put('b', f, 'x', { encryptFor: { session: 's', participant: 'p' } }));
await cpu('plain get', async () => { for await (const _ of await local.getStream('a')); });
await cpu('enc get', async () => { for await (const _ of await enc.getStream('b')); });
}
await db.destroy();
