import { loadConfig } from '../lib/config.ts';
import { VerbatimError } from '../lib/errors.ts';
import { createLogger } from '../lib/logger.ts';
import { inOwnProcessGroup, onParentGone, rerunInOwnProcessGroup } from './process-group.ts';

/**
 * `verbatim <command>`: the single entry point behind the npm scripts.
 *   start       every stage as its own supervised process, on embedded defaults (or the configured backends)
 *   demo        a scripted recorded meeting (three headless participants), processed and searched
 *   recording   inspect a track segment file or verify a session directory
 *   recorders   the recorder pool: list, drain, activate
 *   audit       verify the hash-chained audit trail against its signed checkpoints
 *   export      write / verify an e-discovery archive (tar + manifest of SHA-256s)
 *   keys        list users and API keys, revoke a key, create an admin key (recovery), rotate the master key on the host
 * Commands load their modules on demand: `start` re-runs itself in its own process group
 * first, and the front process of that pair only relays signals (it should start fast).
 */
async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    case 'start':
      // Own process group: a terminal's Ctrl-C must reach the launcher only, not its workers (process-group.ts).
      return inOwnProcessGroup() ? start() : rerunInOwnProcessGroup();
    case 'demo':
      return (await import('./demo.ts')).runDemoCommand(rest);
    case 'recording':
      return (await import('../recorder/index.ts')).runRecordingCommand(rest, (s) => process.stdout.write(s));
    case 'recorders':
      return (await import('../recorder/index.ts')).runRecordersCommand(rest, (s) => process.stdout.write(s));
    case 'audit':
      return (await import('../audit/index.ts')).runAuditCommand(rest, (s) => process.stdout.write(s));
    case 'export':
      return (await import('../audit/index.ts')).runExportCommand(rest, (s) => process.stdout.write(s), { err: (s) => process.stderr.write(s) });
    case 'keys':
      return (await import('../audit/index.ts')).runKeysCommand(rest, (s) => process.stdout.write(s));
    case 'retention':
    case 'erasure':
    case 'holds':
    case 'consent':
      return (await import('../audit/index.ts')).runComplianceCommand(command, rest, (s) => process.stdout.write(s));
    case 'help':
    case '--help':
      process.stdout.write(
        [
          'usage: verbatim start',
          '       verbatim demo [--data-dir <dir>] [--keep]',
          '       verbatim recording inspect <file.vrtp> [--header | --packets] [--json]',
          '       verbatim recording verify <session dir> [--json]',
          '       verbatim recorders list [--json] | recorders drain <recorder id> | recorders activate <recorder id>',
          '       verbatim audit verify [--json] [--public-key <file.pub>]',
          '       verbatim audit public-key',
          '       verbatim export create (--session <id>... | --hold <id> | --query <text>) --out <file.tar>',
          '       verbatim retention sweep [--dry-run] [--json]',
          '       verbatim erasure request --participant <id> [--session <id>] --reason <text> [--json] | erasure list',
          '       verbatim holds list [--all] | holds place --case <id> --reason <r> --scope <s> --value <v> | holds release <id>',
          '       verbatim consent list [--participant <id>] [--session <id>] [--room <id>] [--json | --csv]',
          '       verbatim export verify <archive.tar> [--json]',
          '       verbatim keys list [--json] | keys revoke <key prefix | id> [--reason <text>] | keys create-admin [--name <n>] [--expires <date-time>] | keys rotate-master [--new-key-file <f>]',
          '',
        ].join('\n'),
      );
      return 0;
    default:
      process.stderr.write(`unknown command "${command}"; try: verbatim help\n`);
      return 2;
  }
}

async function start(): Promise<number> {
  // The stop handlers come first: a Ctrl-C at any moment of start-up stops what has started so far.
  const controller = new AbortController();
  let requested: string | undefined;
  let wake!: () => void;
  const stopRequested = new Promise<void>((r) => (wake = r));
  const stop = (why: string) => {
    if (requested !== undefined) return;
    requested = why;
    controller.abort();
    wake();
  };
  // `on`, not `once`: a second Ctrl-C (or one relayed twice) must not kill the launcher mid-shutdown.
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // The front process is gone (even kill -9): stop as if it had relayed Ctrl-C.
  onParentGone(() => stop('parent gone'));
  const config = loadConfig();
  const logger = createLogger({ level: config.LOG_LEVEL, name: 'verbatim-launcher' });
  const { startStack, sfuAdmin } = await import('./start.ts');
  const interruptedStart = () => {
    logger.info({ signal: requested }, 'stopped during start-up');
    process.stderr.write(`Stopped during start-up (${requested}); nothing is left running.\n`);
    return 0;
  };
  if (controller.signal.aborted) return interruptedStart();
  let stack: Awaited<ReturnType<typeof startStack>>;
  try {
    stack = await startStack(config, logger, { signal: controller.signal });
  } catch (err) {
    if (err instanceof VerbatimError && err.code === 'INTERRUPTED') return interruptedStart();
    throw err;
  }
  let joinUrl = '';
  try {
    const room = 'demo';
    const { signal } = controller;
    const existing = await sfuAdmin(stack, 'GET', `/rooms/${room}`, undefined, { allow404: true, signal });
    if (!existing) {
      const flags = { record: false, lockRecord: false, consent: 'notify', transcribe: false, language: 'en', maxPublishers: 50, notifyJoining: true };
      await sfuAdmin(stack, 'POST', '/rooms', { id: room, name: 'Demo meeting', flags }, { signal });
    }
    ({ joinUrl } = (await sfuAdmin(stack, 'POST', `/rooms/${room}/tokens`, { identity: `guest-${Date.now().toString(36)}`, name: 'Guest', ttlMinutes: 24 * 60 }, { signal })) as { joinUrl: string });
  } catch (err) {
    if (!controller.signal.aborted) {
      await stack.stop();
      throw err;
    }
  }
  if (controller.signal.aborted) {
    // The first admin key exists now and is shown only once: show it even so.
    if (stack.firstAdminKey) process.stdout.write(`  Admin key    : ${stack.firstAdminKey}  (shown once: keep it; it creates the other keys)\n`);
    await stack.stop();
    return interruptedStart();
  }
  const base = config.SFU_PUBLIC_URL ?? stack.urls.sfu;
  process.stdout.write(
    [
      '',
      'Verbatim is running.',
      `  Meeting page : ${joinUrl}`,
      // Join tokens are single-use (issue 12): this one is one participant; reloading it rejoins as them.
      `                 (one participant; more: POST ${base}/api/v1/rooms/demo/tokens with the admin API secret)`,
      `  Admin API    : ${base}/api/v1  (Authorization: Bearer ${stack.apiSecret})`,
      `  Recorder     : ${stack.urls.recorder}  (recordings in ${config.RECORDINGS_DIR})`,
      `  Console      : ${stack.urls.audit}/console/  (sign in with an API key)`,
      `  Compliance   : ${stack.urls.audit}/api/v1  (OpenAPI at ${stack.urls.audit}/docs)`,
      stack.firstAdminKey
        ? `  Admin key    : ${stack.firstAdminKey}  (shown once: keep it; it creates the other keys)`
        : '  Admin key    : printed at the first start (POST /api/v1/keys with it creates more)',
      `  Metrics      : ${base}/metrics`,
      `  Data dir     : ${config.DATA_DIR}`,
      ...stack.notes.map((n) => `  Note         : ${n}`),
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  const failure = await Promise.race([stopRequested.then(() => undefined), stack.failed]);
  logger.info({ signal: requested, failure: failure?.code }, 'shutting down');
  await stack.stop();
  if (failure) {
    process.stderr.write(`error ${failure.code}: ${failure.message}\n${failure.hint ? `fix: ${failure.hint}\n` : ''}`);
    return 1;
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof VerbatimError) {
      process.stderr.write(`error ${err.code}: ${err.message}\n${err.hint ? `fix: ${err.hint}\n` : ''}`);
    } else {
      process.stderr.write(`fatal: ${(err as Error).stack ?? String(err)}\n`);
    }
    process.exit(1);
  },
);
