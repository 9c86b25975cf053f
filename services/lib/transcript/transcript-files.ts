import { artifactContentType, transcriptKind, type ArtifactKind } from '../storage/artifact-kinds.ts';

/**
 * The one transcript builder. A session's transcript is stored, exported and rebuilt (after
 * an erasure) as three files: JSON (machine), WebVTT (players), plain text (people).
 */
export interface SpeakerSegment {
  speaker: string;
  participant: string;
  start: number;
  end: number;
  text: string;
  /** whisper.cpp's word timing in session seconds (transcript.json carries it; redaction uses it). */
  words?: { text: string; start: number; end: number }[];
}

export function transcriptJson(session: string, language: string, segments: SpeakerSegment[]): string {
  return `${JSON.stringify({ version: 1, session, language, segments }, null, 2)}\n`;
}

function vttTime(s: number): string {
  const ms = Math.round(s * 1000);
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const sec = Math.floor((ms % 60_000) / 1000);
  return `${String(h).padStart(2, '0')}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}.${String(ms % 1000).padStart(3, '0')}`;
}

export function transcriptVtt(segments: SpeakerSegment[]): string {
  const cues = segments.map((s, i) => `${i + 1}\n${vttTime(s.start)} --> ${vttTime(s.end)}\n<v ${s.speaker.replace(/[<>]/g, '')}>${s.text}`);
  return `WEBVTT\n\n${cues.join('\n\n')}${cues.length ? '\n' : ''}`;
}

export function transcriptText(segments: SpeakerSegment[]): string {
  return segments.map((s) => `[${vttTime(s.start)}] ${s.speaker}: ${s.text}`).join('\n') + (segments.length ? '\n' : '');
}

export type TranscriptFileName = 'transcript.json' | 'transcript.vtt' | 'transcript.txt';

export interface TranscriptFile {
  /** Its name within the session (the artifact key's last part). */
  name: TranscriptFileName;
  ext: 'json' | 'vtt' | 'txt';
  kind: ArtifactKind;
  contentType: string;
  body: string;
}

/** The session's transcript files from its segments (in session-time order). */
export function transcriptFiles(session: string, language: string, segments: SpeakerSegment[]): TranscriptFile[] {
  const file = (name: TranscriptFileName, body: string): TranscriptFile => {
    const kind = transcriptKind(name);
    return { name, ext: name.slice('transcript.'.length) as TranscriptFile['ext'], kind, contentType: artifactContentType(kind, name), body };
  };
  return [file('transcript.json', transcriptJson(session, language, segments)), file('transcript.vtt', transcriptVtt(segments)), file('transcript.txt', transcriptText(segments))];
}

/** Segments as the transcript_segments table holds them (in seq order), and their language. */
export function transcriptFromRows(
  rows: readonly { speaker: string; participant_id: string; start_seconds: number | string; end_seconds: number | string; text: string; language: string; words?: unknown }[],
  defaultLanguage: string,
): { segments: SpeakerSegment[]; language: string } {
  return {
    segments: rows.map((r) => {
      const words = typeof r.words === 'string' ? (JSON.parse(r.words) as SpeakerSegment['words']) : (r.words as SpeakerSegment['words'] | null | undefined);
      return { speaker: r.speaker, participant: r.participant_id, start: Number(r.start_seconds), end: Number(r.end_seconds), text: r.text, ...(words ? { words } : {}) };
    }),
    language: rows[0]?.language ?? defaultLanguage,
  };
}
