import { VerbatimError } from '../../lib/errors.ts';
import { isChannelBroken } from './worker-pool.ts';

/** A room's view of its worker: whether it is gone, a health probe (which retires a broken one), retirement. */
export interface WorkerHealth {
  gone(): boolean;
  /** Resolves true when the worker answers; a broken one is retired (its rooms close with WORKER_DIED). */
  probe(): Promise<boolean>;
  retire(err: Error): void;
}

/**
 * Runs one mediasoup call for a client and says what its failure means:
 * - a broken channel (see isChannelBroken): the worker is retired, the caller gets WORKER_DIED;
 * - the worker refusing client input mediasoup checks itself (TypeError, UnsupportedError, the
 *   RTP listener's duplicate checks, a second connect, no free port): a 4xx/503 code;
 * - anything else: the worker is probed first, because a value that fails while mediasoup
 *   serializes a request (even as a TypeError) leaves its builder broken for every later
 *   request; only a healthy worker lets the error through as it is (INTERNAL).
 */
export async function mediaFailure<T>(what: string, fn: () => Promise<T> | T, worker: WorkerHealth): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof VerbatimError) throw err;
    const e = err instanceof Error ? err : new Error(String(err));
    if (isChannelBroken(e)) {
      worker.retire(e);
      throw workerDied(what, e);
    }
    const known = knownRefusal(what, e);
    if (!(await worker.probe())) throw workerDied(what, e);
    throw known ?? e;
  }
}

function knownRefusal(what: string, e: Error): VerbatimError | undefined {
  if (/already exists in RTP listener/.test(e.message)) {
    return new VerbatimError('DUPLICATE_STREAM', `${what} refused: ${e.message}`, { hint: 'Each SSRC, MID and RID may be used once per transport.' });
  }
  if (/connect\(\) already called/.test(e.message)) {
    return new VerbatimError('ALREADY_CONNECTED', `${what} refused: the transport is already connected`, { hint: 'Connect each transport once.' });
  }
  if (/no more available ports/.test(e.message)) {
    return new VerbatimError('PORTS_EXHAUSTED', 'the media server has no free RTC port right now', { hint: 'Try again later; the operator can widen SFU_RTC_MIN_PORT..SFU_RTC_MAX_PORT.' });
  }
  if (e.name === 'TypeError' || e.name === 'UnsupportedError') {
    return new VerbatimError('BAD_REQUEST', `${what} rejected: ${e.message}`, { hint: 'Check the parameters mediasoup-client produced.' });
  }
  return undefined;
}

function workerDied(what: string, cause: Error): VerbatimError {
  return new VerbatimError('WORKER_DIED', `${what} failed: the media server process for this room failed and is being replaced`, { hint: 'Rejoin the meeting in a few seconds.', cause });
}
