import type { TrackHeader } from '../services/lib/contracts/recording.ts';

/** A valid track header for format tests. */
export const sampleHeader = (over: Partial<TrackHeader> = {}): TrackHeader => ({
  format: 'verbatim-rtp',
  version: 1,
  room: 'r',
  session: 's',
  track: 't',
  segment: 0,
  participant: { id: 'p', name: 'P' },
  kind: 'audio',
  codec: { mimeType: 'audio/opus', clockRate: 48000, channels: 2, payloadType: 100, parameters: {} },
  ssrc: 1234,
  headerExtensions: [],
  startedAt: new Date(0).toISOString(),
  startedAtUs: 0,
  consent: { decision: 'granted', method: 'click' },
  ...over,
});
