import type { Db } from '../../../db/database.ts';
import type { Config } from '../../lib/config.ts';
import { VerbatimError } from '../../lib/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import { loadOrCreateSecrets } from '../../lib/secrets.ts';
import { RecorderClient } from './recorder-client.ts';

export const ORPHAN_END_REASON = 'sfu-restarted';

/**
 * An SFU that died (kill -9, a crash) leaves its recording sessions open at the recorder:
 * nobody will end them. On start, before it serves anyone, the SFU ends every session the
 * database still lists as recording for its rooms, through its recorder (RECORDER_URL), so
 * the recorder seals each with what was recorded and queues it for transcoding.
 * Participants who come back join as new peers, in a new session. With several SFU hosts
 * on one database, each with its own recorder (README, Scaling out), another host's
 * sessions are unknown to this recorder and left alone; SFU hosts sharing one recorder
 * would end each other's sessions at a restart.
 */
export async function endOrphanedSessions(deps: { db: Db; config: Config; logger: Logger; retryForMs?: number }): Promise<{ ended: string[]; unknown: string[]; failed: string[] }> {
  const { db, config } = deps;
  const log = deps.logger.child({ component: 'orphan-sessions' });
  const out = { ended: [] as string[], unknown: [] as string[], failed: [] as string[] };
  if (!config.RECORDER_URL) return out;
  const open = await db
    .selectFrom('recording_sessions as s')
    .innerJoin('rooms as r', 'r.id', 's.room_id')
    .select(['s.id', 's.room_id'])
    .where('s.status', '=', 'recording')
    .execute();
  if (open.length === 0) return out;
  const secrets = loadOrCreateSecrets(config.DATA_DIR, { apiSecret: config.SFU_API_SECRET, tokenSecret: config.SFU_TOKEN_SECRET, recorderSecret: config.RECORDER_SECRET });
  const recorder = new RecorderClient(config.RECORDER_URL, secrets.recorderSecret, log);
  const deadline = Date.now() + (deps.retryForMs ?? 15_000);
  await Promise.all(
    open.map(async ({ id, room_id: room }) => {
      for (;;) {
        try {
          await recorder.endSession(room, id, ORPHAN_END_REASON);
          log.warn({ room, session: id }, 'ended a recording session left open by the previous SFU: sealed with what was recorded');
          out.ended.push(id);
          return;
        } catch (err) {
          const code = err instanceof VerbatimError ? err.code : 'INTERNAL';
          if (code === 'ROOM_NOT_FOUND') {
            // Not open at our recorder: another SFU host's session, or one that ended meanwhile.
            log.info({ room, session: id }, 'a session listed as recording is not open at this recorder: left alone');
            out.unknown.push(id);
            return;
          }
          if (code !== 'RECORDER_UNAVAILABLE' || Date.now() > deadline) {
            log.error({ err, room, session: id }, 'could not end a recording session left open by the previous SFU');
            out.failed.push(id);
            return;
          }
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    }),
  );
  return out;
}
