import type { Migration, MigrationProvider } from 'kysely/migration';
import * as m0001 from './0001-rooms.ts';
import * as m0002 from './0002-recording-sessions.ts';
import * as m0003 from './0003-artifacts-transcripts.ts';
import * as m0004 from './0004-audit-log.ts';
import * as m0005 from './0005-rbac.ts';
import * as m0006 from './0006-retention-holds.ts';
import * as m0007 from './0007-console-erasure.ts';
import * as m0008 from './0008-search-time-index.ts';
import * as m0009 from './0009-exports.ts';
import * as m0010 from './0010-session-events.ts';
import * as m0011 from './0011-erasure-jobs.ts';
import * as m0012 from './0012-key-lifecycle.ts';
import * as m0013 from './0013-sso.ts';
import * as m0014 from './0014-recorder-pool.ts';
import * as m0015 from './0015-raw-segment-storage.ts';
import * as m0016 from './0016-supervision.ts';
import * as m0017 from './0017-capture-assurance.ts';
import * as m0018 from './0018-sfu-cluster.ts';
import * as m0019 from './0019-data-keys.ts';
import * as m0020 from './0020-recorder-upload-backlog.ts';

/**
 * Forward-only migrations, listed in code (not read from a directory) so they work
 * the same from source, from a bundle and in tests. Never edit a landed migration;
 * add the next number.
 */
const migrations: Record<string, Migration> = {
  '0001-rooms': m0001,
  '0002-recording-sessions': m0002,
  '0003-artifacts-transcripts': m0003,
  '0004-audit-log': m0004,
  '0005-rbac': m0005,
  '0006-retention-holds': m0006,
  '0007-console-erasure': m0007,
  '0008-search-time-index': m0008,
  '0009-exports': m0009,
  '0010-session-events': m0010,
  '0011-erasure-jobs': m0011,
  '0012-key-lifecycle': m0012,
  '0013-sso': m0013,
  '0014-recorder-pool': m0014,
  '0015-raw-segment-storage': m0015,
  '0016-supervision': m0016,
  '0017-capture-assurance': m0017,
  '0018-sfu-cluster': m0018,
  '0019-data-keys': m0019,
  '0020-recorder-upload-backlog': m0020,
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};
