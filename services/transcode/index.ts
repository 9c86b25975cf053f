/**
 * The transcode stage's public surface: the queue worker, the transcriber it is
 * configured with, and the Whisper model helpers the launcher and the demo need.
 * Everything else under src/ is private to transcode.
 */
export { TranscodeWorker } from './src/transcode-worker.ts';
export { processFinalizeJob } from './src/finalize-job.ts';
export { runSessionPipeline } from './src/session-pipeline.ts';
export { transcriberFromConfig } from './src/transcriber-factory.ts';
export { modelLocation } from './src/transcriber/whisper-models.ts';
export { TEST_PHRASE, fixedPhraseModelPath, randomWeightsModelPath } from './src/transcriber/ggml-test-model.ts';
