/** Transcript outputs: JSON (machine), WebVTT (players), plain text (people). */
export interface SpeakerSegment {
  speaker: string;
  participant: string;
  start: number;
  end: number;
  text: string;
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
