import { sql } from 'kysely';
import { openConfiguredDatabase, type Db } from '../../../db/database.ts';
import { loadConfig } from '../../lib/config.ts';

export const RECORDERS_USAGE = ['usage: verbatim recorders list [--json]', '       verbatim recorders drain <recorder id>     move its tracks to other recorders (make-before-break)', '       verbatim recorders activate <recorder id>  take tracks again', ''].join('\n');

/**
 * `verbatim recorders ...`: the recorder pool's registry (the recorders table). Drain sets the
 * recorder's state in the registry; the recorder takes it up at its next heartbeat and every
 * SFU moves its tracks off it, make-before-break. Returns the exit code (2: usage, 1: unknown id).
 */
export async function runRecordersCommand(args: string[], out: (s: string) => void, opts: { db?: Db } = {}): Promise<number> {
  const [sub, ...rest] = args;
  const json = rest.includes('--json');
  const positional = rest.filter((a) => !a.startsWith('--'));
  if (sub === undefined || sub === 'help' || sub === '--help') {
    out(RECORDERS_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'list' && sub !== 'drain' && sub !== 'activate') {
    out(`unknown recorders command "${sub}"\n${RECORDERS_USAGE}`);
    return 2;
  }
  if (sub !== 'list' && positional.length !== 1) {
    out(`"recorders ${sub}" takes exactly one recorder id\n${RECORDERS_USAGE}`);
    return 2;
  }
  const db = opts.db ?? (await openConfiguredDatabase(loadConfig()));
  try {
    if (sub === 'list') {
      const rows = await db
        .selectFrom('recorders')
        .select(['id', 'url', 'host', 'state', 'load', 'capacity', sql<number>`(extract(epoch from (now() - heartbeat_at)) * 1000)::float8`.as('heartbeat_age_ms')])
        .orderBy('id')
        .execute();
      if (json) out(`${JSON.stringify(rows, null, 2)}\n`);
      else for (const r of rows) out(`${r.id}\t${r.state}\t${r.load}/${r.capacity} tracks\theartbeat ${Math.round(r.heartbeat_age_ms)} ms ago\t${r.url}\t${r.host}\n`);
      return 0;
    }
    const state = sub === 'drain' ? 'draining' : 'active';
    const r = await db.updateTable('recorders').set({ state }).where('id', '=', positional[0]!).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) {
      out(`no recorder ${positional[0]} in the registry (see: verbatim recorders list)\n`);
      return 1;
    }
    out(`${positional[0]}: ${state}\n`);
    return 0;
  } finally {
    if (!opts.db) await db.destroy();
  }
}
