/** One transcribed stretch of speech, in seconds on the session timeline. */
export interface TranscriptSegment {
  start: number;
  end: number;
  text: string;
  /** Its words with their own times (whisper.cpp token timestamps), when the transcriber gives them. */
  words?: TranscriptWord[];
}

/** One word: whisper tokens joined up to the next leading space, from its first token's start to its last token's end. */
export interface TranscriptWord {
  text: string;
  start: number;
  end: number;
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
  /** CPU threads for this call (overrides the transcriber's own), so callers can split a thread budget. */
  threads?: number;
}

export interface Transcriber {
  /** CPU threads this transcriber may use in all (WHISPER_THREADS); callers split it between concurrent calls. */
  readonly threads?: number;
  transcribe(input: TranscribeInput, opts?: TranscribeOptions): Promise<TranscriptSegment[]>;
}
