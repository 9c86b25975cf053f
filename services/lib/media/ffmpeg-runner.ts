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

export class FluentFfmpegRunner implements FfmpegRunner {
  run(job: FfmpegJob, opts: { signal?: AbortSignal; onProgress?: (seconds: number) => void } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      const cmd = ffmpeg();
      for (const i of job.inputs) {
        cmd.input(i.path);
        if (i.options?.length) cmd.inputOptions(i.options);
      }
      if (job.filterComplex) cmd.complexFilter(job.filterComplex);
      cmd.outputOptions(['-y', '-nostdin', '-v', 'error', ...job.outputOptions]);
      cmd.output(job.output);
      let stderr = '';
      cmd.on('stderr', (line: string) => (stderr = `${stderr}${line}\n`.slice(-4000)));
      cmd.on('progress', (p: { timemark?: string }) => {
        if (!opts.onProgress || !p.timemark) return;
        const [h, m, s] = p.timemark.split(':').map(Number);
        opts.onProgress((h ?? 0) * 3600 + (m ?? 0) * 60 + (s ?? 0));
      });
      cmd.on('error', (err: Error) => reject(new Error(`ffmpeg failed for ${job.output}: ${err.message}\n${stderr}`)));
      cmd.on('end', () => resolve());
      opts.signal?.addEventListener('abort', () => cmd.kill('SIGKILL'), { once: true });
      cmd.run();
    });
  }
}
