/** One transcribed stretch of speech, in seconds on the session timeline. */
export interface TranscriptSegment {
  start: number;
  end: number;
  text: string;
}

export interface TranscribeInput {
  /** 16 kHz mono s16le WAV. Never modified. */
  wavPath: string;
  /** Whisper language code (en, de, ...). */
  language: string;
  /** Where this file starts on the session timeline (default 0). */
  offsetSeconds?: number;
}

export interface TranscribeOptions {
  signal?: AbortSignal;
}

export interface Transcriber {
  transcribe(input: TranscribeInput, opts?: TranscribeOptions): Promise<TranscriptSegment[]>;
}
