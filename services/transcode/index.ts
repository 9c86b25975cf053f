/**
 * The transcode stage's public surface: the queue worker (session.finalize and
 * session.rerender, contracts in services/lib/contracts/jobs.ts), the transcriber it is
 * configured with, the Whisper model helpers the launcher and the demo need, and the
 * session pipeline on a local directory (tests seed sessions with it). Everything else
 * under src/ is private to transcode.
 */
export { TranscodeWorker } from './src/transcode-worker.ts';
export { runSessionPipeline, sessionClock } from './src/session-pipeline.ts';
/** Reading one recorder segment, and merging copies of a track (RECORDER_REPLICAS): what the pool tests check recordings with. */
export { readTrackPackets } from './src/depacketize/rtp-stream.ts';
export { mergeReplicas } from './src/depacketize/replica-merge.ts';
export { sessionLimitsFromConfig, type SessionLimits } from './src/session-limits.ts';
export { transcriberFromConfig } from './src/transcriber-factory.ts';
export { modelLocation } from './src/transcriber/whisper-models.ts';
export { TEST_PHRASE, fixedPhraseModelPath, randomWeightsModelPath } from './src/transcriber/ggml-test-model.ts';
