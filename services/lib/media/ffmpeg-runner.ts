import ffmpeg from 'fluent-ffmpeg';

/**
 * The one place that runs ffmpeg. fluent-ffmpeg was archived upstream in 2025, so it
 * stays behind this small interface: swapping it for a plain spawn touches one file.
 */
export interface FfmpegJob {
  inputs: { path: string; options?: string[] }[];
  filterComplex?: string;
  outputOptions: string[];
  output: string;
}

export interface FfmpegRunner {
  run(job: FfmpegJob, opts?: { signal?: AbortSignal; onProgress?: (seconds: number) => void }): Promise<void>;
}

/** Output flags that make ffmpeg write the same bytes for the same input (reruns are idempotent). */
export const BITEXACT = ['-fflags', '+bitexact', '-flags:v', '+bitexact', '-flags:a', '+bitexact', '-map_metadata', '-1', '-map_chapters', '-1'];

/** After SIGTERM, this long for ffmpeg to finish its trailer before SIGKILL. */
export const KILL_GRACE_MS = 2000;

export class FluentFfmpegRunner implements FfmpegRunner {
  /**
   * Runs one ffmpeg. When `signal` aborts — before ffmpeg starts, while it is being started,
   * or while it runs — the process gets SIGTERM, then SIGKILL after KILL_GRACE_MS, and the
   * returned promise rejects once it has exited: nothing is left running behind the caller.
   */
  run(job: FfmpegJob, opts: { signal?: AbortSignal; onProgress?: (seconds: number) => void } = {}): Promise<void> {
    const { signal } = opts;
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(stopped(job, signal));
        return;
      }
      const cmd = ffmpeg();
      for (const i of job.inputs) {
        cmd.input(i.path);
        if (i.options?.length) cmd.inputOptions(i.options);
      }
      if (job.filterComplex) cmd.complexFilter(job.filterComplex);
      cmd.outputOptions(['-y', '-nostdin', '-v', 'error', ...job.outputOptions]);
      cmd.output(job.output);
      let stderr = '';
      let started = false;
      let killTimer: NodeJS.Timeout | undefined;
      const stop = () => {
        // fluent-ffmpeg spawns after probing its capabilities: an abort before that is acted on at 'start'.
        if (!started || killTimer) return;
        cmd.kill('SIGTERM');
        killTimer = setTimeout(() => cmd.kill('SIGKILL'), KILL_GRACE_MS);
      };
      const done = () => {
        clearTimeout(killTimer);
        signal?.removeEventListener('abort', stop);
      };
      cmd.on('start', () => {
        started = true;
        if (signal?.aborted) stop();
      });
      cmd.on('stderr', (line: string) => (stderr = `${stderr}${line}\n`.slice(-4000)));
      cmd.on('progress', (p: { timemark?: string }) => {
        if (!opts.onProgress || !p.timemark) return;
        const [h, m, s] = p.timemark.split(':').map(Number);
        opts.onProgress((h ?? 0) * 3600 + (m ?? 0) * 60 + (s ?? 0));
      });
      cmd.on('error', (err: Error) => {
        done();
        reject(signal?.aborted ? stopped(job, signal) : new Error(`ffmpeg failed for ${job.output}: ${err.message}\n${stderr}`));
      });
      cmd.on('end', () => {
        done();
        // ffmpeg may exit 0 after SIGTERM with a cut-short output: that is not a finished file.
        if (killTimer) reject(stopped(job, signal!));
        else resolve();
      });
      signal?.addEventListener('abort', stop, { once: true });
      cmd.run();
    });
  }
}

function stopped(job: FfmpegJob, signal: AbortSignal): Error {
  return new Error(`ffmpeg for ${job.output} was stopped: ${String(signal.reason)}`, { cause: signal.reason });
}

/**
 * A runner whose every ffmpeg also dies with `signal` (a job's): stages run their ffmpegs
 * through it without passing the signal down each call.
 */
export function abortableRunner(runner: FfmpegRunner, signal: AbortSignal): FfmpegRunner {
  return {
    run(job, opts = {}) {
      return runner.run(job, { ...opts, signal: opts.signal ? AbortSignal.any([opts.signal, signal]) : signal });
    },
  };
}
