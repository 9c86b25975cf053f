import type { Config } from '../../lib/config.ts';
import type { Transcriber } from './transcriber/transcriber.ts';
import { createWhisperCppTranscriber, whisperCppOptionsFromConfig } from './transcriber/whisper-cpp-transcriber.ts';
import { resolveWhisperModel } from './transcriber/whisper-models.ts';

/**
 * The configured transcriber (whisper.cpp). The model is resolved and verified first,
 * so a missing or damaged model surfaces as MODEL_MISSING / MODEL_INVALID with the
 * fix, before any work — never as a silently empty transcript.
 */
export function transcriberFromConfig(config: Config): () => Promise<Transcriber> {
  return async () => {
    const opts = whisperCppOptionsFromConfig(config);
    await resolveWhisperModel({ model: opts.model, modelsDir: opts.modelsDir });
    return createWhisperCppTranscriber({ ...opts, beamSize: 1, noFallback: false });
  };
}
