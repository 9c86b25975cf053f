import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import type { AuditSink } from '../../lib/audit-sink.ts';
import type { Config } from '../../lib/config.ts';
import { fdLimitWarning } from '../../lib/fd-limit.ts';
import type { Logger } from '../../lib/logger.ts';
import { createRegistry } from '../../lib/metrics.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import { startHttpServer, type SfuHttpServer } from './http-server.ts';
import { Sfu } from './sfu.ts';

export interface RunningSfu {
  sfu: Sfu;
  http: SfuHttpServer;
  url: string;
  apiSecret: string;
  db: Db;
  close(): Promise<void>;
}

/** Starts the SFU: database (migrated), mediasoup workers, HTTP/WS server. */
/** `audit` is the audit trail the SFU writes room, recording and consent changes to (the launcher passes the compliance service's writer). */
export async function startSfu(config: Config, logger: Logger, opts: { db?: Db; audit: (db: Db) => AuditSink }): Promise<RunningSfu> {
  const warning = fdLimitWarning(config.SFU_MIN_FD_LIMIT);
  if (warning) logger.warn(warning);
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const ownDb = !opts.db;
  const db = opts.db ?? (await openConfiguredDatabase(config));
  const sfu = new Sfu({ config, db, logger: logger.child({ service: 'sfu' }), registry: createRegistry('sfu'), secrets, audit: opts.audit(db) });
  try {
    await sfu.start();
    const http = await startHttpServer(sfu);
    await sfu.startCluster({ control: config.SFU_CLUSTER_URL ?? http.url, public: config.SFU_PUBLIC_URL ?? http.url });
    logger.info({ url: http.url, workers: sfu.pool.size }, 'SFU listening');
    let closing: Promise<void> | undefined;
    return {
      sfu,
      http,
      url: http.url,
      apiSecret: secrets.apiSecret,
      db,
      close() {
        closing ??= (async () => {
          await sfu.close();
          await http.close();
          if (ownDb) await db.destroy();
        })();
        return closing;
      },
    };
  } catch (err) {
    await sfu.close();
    if (ownDb) await db.destroy();
    throw err;
  }
}
