import { spawn } from 'node:child_process';

/**
 * A terminal's Ctrl-C sends SIGINT to the whole foreground process group: not only to the
 * launcher but also to its mediasoup workers and recorder workers, which then die before the
 * launcher has ended the sessions and sealed the recordings. So the command re-runs itself as
 * the leader of a process group of its own and this front process relays signals to it alone.
 * If the front process dies (even by kill -9), the IPC channel closes and the inner process
 * treats that like Ctrl-C (see `onParentGone`).
 */
const INNER_ENV = 'VERBATIM_OWN_PROCESS_GROUP';

export function inOwnProcessGroup(): boolean {
  return process.env[INNER_ENV] === '1' && typeof process.send === 'function';
}

/** Runs this same command line again in a new process group; resolves with its exit code. */
export function rerunInOwnProcessGroup(): Promise<number> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    detached: true,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [INNER_ENV]: '1' },
  });
  const relay = (signal: NodeJS.Signals) => () => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  const onInt = relay('SIGINT');
  const onTerm = relay('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

/** In the inner process: `stop` runs when the front process is gone. */
export function onParentGone(stop: () => void): () => void {
  process.on('disconnect', stop);
  // Gone before we listened (killed while this process was still loading): the event has passed.
  if (typeof process.send === 'function' && !process.connected) queueMicrotask(stop);
  return () => process.off('disconnect', stop);
}
