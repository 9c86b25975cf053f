import { runAuditCommand, runExportCommand, runComplianceCommand } from '../audit/index.ts';
import { loadConfig } from '../lib/config.ts';
import { VerbatimError } from '../lib/errors.ts';
import { createLogger } from '../lib/logger.ts';
import { runRecordingCommand } from '../recorder/index.ts';
import { runDemoCommand } from './demo.ts';
import { inOwnProcessGroup, onParentGone, rerunInOwnProcessGroup } from './process-group.ts';
import { startStack } from './start.ts';

/**
 * `verbatim <command>`: the single entry point behind the npm scripts.
 *   start       every service on embedded defaults (or the configured backends)
 *   demo        a scripted recorded meeting (three headless participants), processed and searched
 *   recording   inspect a track segment file or verify a session directory
 *   audit       verify the hash-chained audit trail against its signed checkpoints
 *   export      write / verify an e-discovery archive (tar + manifest of SHA-256s)
 */
async function main(argv: string[]): Promise<number> {
  const [command = 'help', ...rest] = argv;
  switch (command) {
    case 'start':
      // Own process group: a terminal's Ctrl-C must reach the launcher only, not its workers (process-group.ts).
      return inOwnProcessGroup() ? start() : rerunInOwnProcessGroup();
    case 'demo':
      return runDemoCommand(rest);
    case 'recording':
      return runRecordingCommand(rest, (s) => process.stdout.write(s));
    case 'audit':
      return runAuditCommand(rest, (s) => process.stdout.write(s));
    case 'export':
      return runExportCommand(rest, (s) => process.stdout.write(s), { err: (s) => process.stderr.write(s) });
    case 'retention':
    case 'erasure':
    case 'holds':
    case 'consent':
      return runComplianceCommand(command, rest, (s) => process.stdout.write(s));
    case 'help':
    case '--help':
      process.stdout.write(
        [
          'usage: verbatim start',
          '       verbatim demo [--data-dir <dir>] [--keep]',
          '       verbatim recording inspect <file.vrtp> [--header | --packets] [--json]',
          '       verbatim recording verify <session dir> [--json]',
          '       verbatim audit verify [--json]',
          '       verbatim export create (--session <id>... | --hold <id> | --query <text>) --out <file.tar>',
          '       verbatim retention sweep [--dry-run] [--json]',
          '       verbatim erasure request --participant <id> [--session <id>] --reason <text> [--json] | erasure list',
          '       verbatim holds list [--all] | holds place --case <id> --reason <r> --scope <s> --value <v> | holds release <id>',
          '       verbatim consent list [--participant <id>] [--session <id>] [--room <id>] [--json | --csv]',
          '       verbatim export verify <archive.tar> [--json]',
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
  const config = loadConfig();
  const logger = createLogger({ level: config.LOG_LEVEL });
  const stack = await startStack(config, logger);
  const { sfu } = stack;
  const room =
    (await sfu.sfu.store.get('demo')) ??
    (await sfu.sfu.createRoom({ id: 'demo', name: 'Demo meeting', flags: { record: false, lockRecord: false, consent: 'notify', transcribe: false, language: 'en', maxPublishers: 50, notifyJoining: true } })).room;
  const { token } = sfu.sfu.mintToken(room.id, `guest-${Date.now().toString(36)}`, 'Guest', 24 * 60);
  const base = config.SFU_PUBLIC_URL ?? sfu.url;
  process.stdout.write(
    [
      '',
      'Verbatim is running.',
      `  Meeting page : ${base}/meet?token=${encodeURIComponent(token)}`,
      `  Admin API    : ${base}/api/v1  (Authorization: Bearer ${sfu.apiSecret})`,
      `  Recorder     : ${stack.recorder.url}  (recordings in ${config.RECORDINGS_DIR})`,
      `  Console      : ${stack.audit.url}/console/  (sign in with an API key)`,
      `  Compliance   : ${stack.audit.url}/api/v1  (OpenAPI at ${stack.audit.url}/docs)`,
      stack.firstAdminKey
        ? `  Admin key    : ${stack.firstAdminKey}  (shown once: keep it; it creates the other keys)`
        : '  Admin key    : printed at the first start (POST /api/v1/keys with it creates more)',
      `  Metrics      : ${base}/metrics`,
      `  Data dir     : ${config.DATA_DIR}`,
      ...(stack.modelMissing ? [`  Note         : ${stack.modelMissing}`] : []),
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info({ signal: sig }, 'shutting down');
      resolve();
    };
    // `on`, not `once`: a second Ctrl-C (or one relayed twice) must not kill the launcher mid-shutdown.
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    // The front process is gone (even kill -9): stop as if it had relayed Ctrl-C.
    onParentGone(() => stop('parent gone'));
  });
  await stack.stop();
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
