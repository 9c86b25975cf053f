import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { stopChild } from './processes.ts';

/**
 * A real S3 server that enforces Object Lock, for the WORM tests: Ceph's radosgw on a one-node
 * cluster (one mon, one memstore OSD, no mgr) in a temporary directory, on 127.0.0.1 only.
 * Pacific (Debian 12) has no single-process backend, hence the tiny cluster. The settings that
 * matter, and why, are in ../shared/recipes/radosgw-object-lock.md: `ms_mon_client_mode = crc`
 * (else radosgw retries auth forever), short paxos intervals (13.5 s → ~2.6 s start-up), every
 * path under the directory (else it writes /var/log/ceph), and `timeout` around each CLI call
 * (with no mgr some commands hang).
 */

const run = promisify(execFile);
const BINARIES = ['monmaptool', 'ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph'];

export interface Radosgw {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

/** Why radosgw cannot run here (its packages are missing), or undefined when it can. */
export function radosgwUnavailable(): string | undefined {
  const missing = BINARIES.filter((b) => !['/usr/bin', '/usr/sbin', '/bin'].some((d) => existsSync(path.join(d, b))));
  return missing.length > 0 ? `Ceph's radosgw is not installed (missing ${missing.join(', ')}): the set-up installs radosgw, ceph-mon and ceph-osd as root` : undefined;
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** `n` consecutive free ports (mon v2, mon v1, the messenger range, radosgw). */
async function freePortRange(n: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 20_000 + Math.floor(Math.random() * 20_000);
    let ok = true;
    for (let p = base; p < base + n && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error('no free port range for radosgw');
}

async function until(what: string, ms: number, probe: () => Promise<boolean>, died: () => string | undefined): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const gone = died();
    if (gone) throw new Error(`${what}: ${gone}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts the cluster and radosgw with one S3 user; `stop()` ends every daemon and removes the directory. */
export async function startRadosgw(): Promise<Radosgw> {
  const why = radosgwUnavailable();
  if (why) throw new Error(why);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-radosgw-'));
  const base = await freePortRange(12);
  const [monV2, monV1, rgwPort] = [base, base + 1, base + 2];
  const fsid = randomUUID();
  const conf = path.join(dir, 'ceph.conf');
  for (const d of ['mon', 'log', 'run', 'crash']) mkdirSync(path.join(dir, d));
  writeFileSync(
    conf,
    `[global]
fsid = ${fsid}
mon_host = [v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv6 = false
ms_bind_port_min = ${base + 3}
ms_bind_port_max = ${base + 11}
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
keyring = /dev/null
run_dir = ${dir}/run
admin_socket = ${dir}/run/$name.asok
pid_file = ${dir}/run/$name.pid
log_file = ${dir}/log/$name.log
crash_dir = ${dir}/crash
mon_cluster_log_file = default=${dir}/log/ceph.$channel.log cluster=${dir}/log/ceph.log
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0

[mon]
mon_data = ${dir}/mon/$id
paxos_propose_interval = 0.05
paxos_min_wait = 0.01
mon_data_avail_warn = 5

[osd]
osd_data = ${dir}/$name
osd_objectstore = memstore
memstore_device_bytes = 536870912

[client.rgw.verbatim]
rgw_frontends = beast endpoint=127.0.0.1:${rgwPort}
`,
  );
  const daemons: ChildProcess[] = [];
  const daemon = (bin: string, args: string[]) => {
    const child = spawn(bin, ['-c', conf, ...args, '-f'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    daemons.push(child);
    return { died: () => (child.exitCode !== null || child.signalCode !== null ? `${bin} exited (${child.exitCode ?? child.signalCode}): ${err.trim().slice(-500)}` : undefined) };
  };
  // Every CLI call bounded: with no mgr, some commands never answer.
  const cli = async (bin: string, args: string[]) => (await run('timeout', ['20', bin, '-c', conf, ...args], { maxBuffer: 1 << 20 })).stdout;
  const stop = async () => {
    // radosgw, then the OSD, then the mon: each TERM, KILL if it lingers.
    for (const child of daemons.reverse()) await stopChild(child, 5000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`, path.join(dir, 'monmap')]);
    await cli('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', path.join(dir, 'monmap')]);
    const mon = daemon('ceph-mon', ['-i', 'a']);
    await until('ceph-mon', 30_000, async () => (await cli('ceph', ['mon', 'stat'])).includes('quorum'), mon.died);
    const osdUuid = randomUUID();
    const id = (await cli('ceph', ['osd', 'new', osdUuid])).trim();
    mkdirSync(path.join(dir, `osd.${id}`));
    await cli('ceph-osd', ['-i', id, '--mkfs', '--osd-uuid', osdUuid]);
    const osd = daemon('ceph-osd', ['-i', id]);
    await until('ceph-osd', 30_000, async () => /^osd\.\d+ up/m.test(await cli('ceph', ['osd', 'dump'])), osd.died);
    const rgw = daemon('radosgw', ['-n', 'client.rgw.verbatim']);
    await until('radosgw', 60_000, async () => (await fetch(`http://127.0.0.1:${rgwPort}/`)).status > 0, rgw.died);
    const accessKeyId = `VB${randomUUID().replace(/-/g, '').slice(0, 18).toUpperCase()}`;
    const secretAccessKey = randomUUID().replace(/-/g, '') + randomUUID().replace(/-/g, '').slice(0, 8);
    await cli('radosgw-admin', ['user', 'create', '--uid=verbatim', '--display-name=Verbatim tests', `--access-key=${accessKeyId}`, `--secret=${secretAccessKey}`]);
    return { endpoint: `http://127.0.0.1:${rgwPort}`, accessKeyId, secretAccessKey, stop };
  } catch (err) {
    const log = (name: string) => {
      try {
        return readFileSync(path.join(dir, 'log', name), 'utf8').split('\n').slice(-15).join('\n');
      } catch {
        return '';
      }
    };
    const detail = ['client.rgw.verbatim.log', 'mon.a.log'].map(log).join('\n');
    await stop();
    throw new Error(`${(err as Error).message}\n${detail}`.trim(), { cause: err });
  }
}
