/**
 * The recorder's public surface: starting it, the operator CLI over recordings, and
 * the read-only inspection tools. Everything else under src/ is private to the recorder.
 */
export { startRecorder, type RunningRecorder } from './src/main.ts';
export { runRecordingCommand, RECORDING_USAGE } from './src/inspect-cli.ts';
export { runRecordersCommand, RECORDERS_USAGE } from './src/pool-cli.ts';
export { inspectFile, verifySessionDir, type InspectResult, type VerifyResult } from './src/inspect.ts';
export { SessionStore } from './src/session-store.ts';
export { segmentParticipant, uploadSegment } from './src/segment-uploader.ts';
