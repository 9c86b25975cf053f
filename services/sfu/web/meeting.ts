/// <reference lib="dom" />
import { Device, type types } from 'mediasoup-client';
import { CAMERA_CONSTRAINTS, largeState, produceOptions, setupLargeMeeting, tileAdded, watchTileSize, type Role } from './large-meeting.ts';

/**
 * The meeting page: joins with the token from the URL, asks for recording consent
 * when the room records, publishes mic + camera and shows everyone else. Speaks the
 * v1 signaling protocol (services/lib/contracts/signaling.ts). Test hooks hang off
 * window.verbatim so browser tests read real getStats() numbers.
 */

type Json = Record<string, unknown>;
interface JoinResult {
  peerId: string;
  name: string;
  room: { id: string; name: string; flags: { consent: 'notify' | 'required'; record: boolean; lockRecord: boolean } };
  routerRtpCapabilities: types.RtpCapabilities;
  producers: { producerId: string; peerId: string; peerName: string; kind: 'audio' | 'video' }[];
  recording: RecordingState;
  consentNeeded: boolean;
  /** TURN servers with this participant's short-lived credentials (empty without TURN). */
  iceServers: RTCIceServer[];
  /** All-hands role, active speaker, last-N video set, raised hands (hosts): see large-meeting.ts. */
  role: Role;
  activeSpeaker: string | null;
  videoSet: string[];
  raisedHands: { peerId: string; name: string }[];
}
interface RecordingState {
  recording: boolean;
  consent: 'notify' | 'required';
  recordingYou: boolean;
  failure?: { code: string; message: string };
}
class SignalingError extends Error {
  constructor(readonly code: string, message: string, readonly hint?: string) {
    super(message);
  }
}

class Signaling {
  private nextId = 1;
  private readonly pending = new Map<number, { method: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /**
   * Notifications that arrive before the page has set its handler (it sets it after joining
   * and loading the device: several round trips) are kept and delivered in order when it
   * does; dropping them lost e.g. "recording started" when another participant's first
   * producer flipped recording on during those round trips.
   */
  private early: [string, Json][] | undefined = [];
  private handler: ((name: string, data: Json) => void) | undefined;
  set onNotification(fn: (name: string, data: Json) => void) {
    this.handler = fn;
    const queued = this.early ?? [];
    this.early = undefined;
    for (const [name, data] of queued) fn(name, data);
  }
  onClose: (code: number, reason: string) => void = () => {};
  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener('message', (ev) => {
      const msg = JSON.parse(String(ev.data)) as Json;
      if (typeof msg.notification === 'string') {
        const data = (msg.data ?? {}) as Json;
        if (this.handler) this.handler(msg.notification, data);
        else this.early?.push([msg.notification, data]);
        return;
      }
      const p = this.pending.get(msg.id as number);
      if (!p) return;
      this.pending.delete(msg.id as number);
      if (msg.ok) p.resolve(msg.data);
      else {
        const e = msg.error as { code: string; message: string; hint?: string };
        p.reject(new SignalingError(e.code, e.message, e.hint));
      }
    });
    ws.addEventListener('close', (ev) => {
      for (const p of this.pending.values()) p.reject(new SignalingError('DISCONNECTED', 'connection to the server closed'));
      this.pending.clear();
      this.onClose(ev.code, ev.reason);
    });
  }
  static connect(url: string): Promise<Signaling> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.addEventListener('open', () => resolve(new Signaling(ws)), { once: true });
      ws.addEventListener('error', () => reject(new SignalingError('DISCONNECTED', 'cannot reach the meeting server')), { once: true });
    });
  }
  request<T = Json>(method: string, data: Json = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { method, resolve: resolve as (v: unknown) => void, reject });
      this.ws.send(JSON.stringify({ v: 1, id, method, data }));
    });
  }
  close(): void {
    this.ws.close();
  }
  /** Test hook: the socket's state and the requests still waiting for an answer (what a stuck page waits on). */
  snapshot(): { readyState: number; pending: string[] } {
    return { readyState: this.ws.readyState, pending: [...this.pending].map(([id, p]) => `${id}:${p.method}`) };
  }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  title: $('room-title'),
  status: $('status'),
  error: $('error'),
  recording: $('recording-banner'),
  consent: $<HTMLDialogElement>('consent-dialog'),
  consentAccept: $<HTMLButtonElement>('consent-accept'),
  consentDecline: $<HTMLButtonElement>('consent-decline'),
  local: $<HTMLVideoElement>('local-video'),
  remotes: $('remotes'),
  leave: $<HTMLButtonElement>('leave'),
  mute: $<HTMLButtonElement>('mute'),
  record: $<HTMLButtonElement>('toggle-recording'),
};

const state = {
  phase: 'connecting' as 'connecting' | 'joined' | 'error' | 'left' | 'closed',
  /** The join step in progress, so a page that never reaches 'joined' says where it waits. */
  step: 'connect' as string,
  error: undefined as { code: string; message: string } | undefined,
  peerId: '',
  recording: undefined as RecordingState | undefined,
  producers: {} as Record<string, string>,
  consumers: new Map<string, { consumer: types.Consumer; peerId: string; peerName: string }>(),
  transports: [] as types.Transport[],
};

function showError(code: string, message: string, hint?: string): void {
  state.error = { code, message };
  ui.error.hidden = false;
  ui.error.textContent = `${message}${hint ? ` — ${hint}` : ''} (${code})`;
}

function setStatus(text: string): void {
  ui.status.textContent = text;
}

function renderRecording(r: RecordingState): void {
  state.recording = r;
  ui.recording.hidden = !r.recording;
  ui.record.textContent = r.recording ? 'Stop recording' : 'Start recording';
  ui.recording.className = r.failure ? 'banner failure' : 'banner';
  ui.recording.textContent = r.failure
    ? `Recording failed: ${r.failure.message} (${r.failure.code})`
    : r.recordingYou
      ? 'This meeting is being recorded, including you.'
      : 'This meeting is being recorded. You are not recorded (no consent).';
}

function askConsent(sig: Signaling): void {
  if (ui.consent.open) return;
  ui.consent.showModal();
  const answer = async (decision: 'granted' | 'declined') => {
    ui.consent.close();
    try {
      renderRecording(await sig.request<RecordingState>('consent', { decision, method: 'click' }));
    } catch (e) {
      const err = e as SignalingError;
      showError(err.code, err.message, err.hint);
      // The answer was not stored, so it does not count: ask again (not recorded meanwhile).
      if (err.code === 'CONSENT_NOT_STORED') setTimeout(() => askConsent(sig), 2000);
    }
  };
  ui.consentAccept.onclick = () => void answer('granted');
  ui.consentDecline.onclick = () => void answer('declined');
}

function remoteTile(peerId: string, peerName: string): HTMLElement {
  let tile = ui.remotes.querySelector<HTMLElement>(`[data-peer="${CSS.escape(peerId)}"]`);
  if (!tile) {
    tile = document.createElement('figure');
    tile.className = 'tile';
    tile.dataset.peer = peerId;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // audio plays through its own element; autoplay policy allows muted video
    const audio = document.createElement('audio');
    audio.autoplay = true;
    const caption = document.createElement('figcaption');
    caption.textContent = peerName;
    tile.append(video, audio, caption);
    ui.remotes.append(tile);
    tileAdded(state.peerId);
  }
  return tile;
}

async function main(): Promise<void> {
  const query = new URLSearchParams(location.search);
  const token = query.get('token');
  // ?relay=1: media only through the TURN servers (to check a TURN set-up, or behind a strict firewall).
  const iceTransportPolicy: RTCIceTransportPolicy = query.get('relay') === '1' ? 'relay' : 'all';
  if (!token) {
    state.phase = 'error';
    showError('TOKEN_INVALID', 'This page needs a join link with a token.', 'Ask the meeting host for a join link.');
    return;
  }
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  const sig = await Signaling.connect(wsUrl);
  verbatim.signaling = () => sig.snapshot();
  state.step = 'join';
  let joined: JoinResult;
  try {
    joined = await sig.request<JoinResult>('join', { token });
  } catch (e) {
    const err = e as SignalingError;
    state.phase = 'error';
    showError(err.code, err.message, err.hint);
    setStatus('Could not join.');
    sig.close();
    return;
  }
  state.peerId = joined.peerId;
  ui.title.textContent = joined.room.name;
  setStatus(`Joined as ${joined.name}`);
  renderRecording(joined.recording);
  if (joined.consentNeeded) askConsent(sig);

  state.step = 'load device';
  const device = new Device();
  await device.load({ routerRtpCapabilities: joined.routerRtpCapabilities });
  await sig.request('setRtpCapabilities', { rtpCapabilities: device.rtpCapabilities as unknown as Json });

  const transportFor = async (direction: 'send' | 'recv') => {
    const params = await sig.request<types.TransportOptions>('createWebRtcTransport', { direction });
    const options = { ...params, iceServers: joined.iceServers, iceTransportPolicy };
    const t = direction === 'send' ? device.createSendTransport(options) : device.createRecvTransport(options);
    state.transports.push(t);
    t.on('connect', ({ dtlsParameters }, ok, fail) => {
      sig.request('connectWebRtcTransport', { transportId: t.id, dtlsParameters: dtlsParameters as unknown as Json }).then(() => ok(), fail);
    });
    return t;
  };
  state.step = 'recv transport';
  const recv = await transportFor('recv');
  const producers: types.Producer[] = [];
  let stream: MediaStream | undefined;
  // Set up before any notification can arrive; `publish` (hoisted) runs when a host promotes a viewer.
  const largeMeeting = setupLargeMeeting((m, d) => sig.request(m, d), joined, publish);

  const consume = async (p: { producerId: string; peerId: string; peerName: string; kind: 'audio' | 'video' }) => {
    const c = await sig.request<{ id: string; producerId: string; kind: 'audio' | 'video'; rtpParameters: types.RtpParameters }>('consume', { transportId: recv.id, producerId: p.producerId });
    const consumer = await recv.consume({ id: c.id, producerId: c.producerId, kind: c.kind, rtpParameters: c.rtpParameters });
    state.consumers.set(consumer.id, { consumer, peerId: p.peerId, peerName: p.peerName });
    const tile = remoteTile(p.peerId, p.peerName);
    const el = tile.querySelector(p.kind === 'video' ? 'video' : 'audio') as HTMLMediaElement;
    const stream = (el.srcObject as MediaStream | null) ?? new MediaStream();
    stream.addTrack(consumer.track);
    el.srcObject = stream;
    void el.play().catch(() => {});
    await sig.request('resumeConsumer', { consumerId: consumer.id });
    if (p.kind === 'video') watchTileSize((m, d) => sig.request(m, d), consumer, el as HTMLVideoElement);
  };

  // Before the handler: setting it replays queued notifications at once, and a queued
  // "recording started" reads this (declared after it, it threw and the page never joined).
  let consentAnswered = !joined.consentNeeded && joined.recording.recordingYou;
  ui.consentAccept.addEventListener('click', () => (consentAnswered = true));
  ui.consentDecline.addEventListener('click', () => (consentAnswered = true));
  sig.onNotification = (name, data) => {
    switch (name) {
      case 'newProducer':
        void consume(data as Parameters<typeof consume>[0]).catch((e: SignalingError) => showError(e.code ?? 'CONSUME_FAILED', e.message));
        break;
      case 'consumerClosed': {
        const entry = state.consumers.get(data.consumerId as string);
        if (entry) {
          entry.consumer.close();
          state.consumers.delete(data.consumerId as string);
          const tile = ui.remotes.querySelector(`[data-peer="${CSS.escape(entry.peerId)}"]`);
          if (tile && ![...state.consumers.values()].some((c) => c.peerId === entry.peerId)) tile.remove();
        }
        break;
      }
      case 'recordingState': {
        const r = data as unknown as RecordingState;
        renderRecording(r);
        if (r.recording && r.consent === 'required' && !r.recordingYou && !consentAnswered) askConsent(sig);
        break;
      }
      case 'roomClosed':
        state.phase = 'closed';
        showError(data.code as string, `The meeting ended: ${data.reason as string}`);
        break;
      case 'sessionReplaced':
        state.phase = 'closed';
        showError('SESSION_REPLACED', 'You joined this meeting from another tab or device.');
        break;
      default:
        largeMeeting(name, data);
    }
  };
  sig.onClose = (code, reason) => {
    if (state.phase === 'joined') {
      state.phase = 'closed';
      showError(reason || 'DISCONNECTED', `Disconnected from the meeting (${code}).`);
    }
  };

  state.step = `consume ${joined.producers.length} existing`;
  for (const p of joined.producers) await consume(p);

  // A viewer of an all-hands room publishes only once a host promotes it.
  async function publish(): Promise<void> {
    state.step = 'getUserMedia';
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: CAMERA_CONSTRAINTS });
    ui.local.srcObject = stream;
    state.step = 'send transport';
    const send = await transportFor('send');
    send.on('produce', ({ kind, rtpParameters, appData }, ok, fail) => {
      sig
        .request<{ id: string }>('produce', { transportId: send.id, kind, rtpParameters: rtpParameters as unknown as Json, appData })
        .then(({ id }) => ok({ id }), fail);
    });
    for (const track of stream.getTracks()) {
      state.step = `produce ${track.kind}`;
      try {
        const producer = await send.produce(produceOptions(track));
        producers.push(producer);
        state.producers[producer.kind] = producer.id;
      } catch (e) {
        const err = e as SignalingError;
        showError(err.code ?? 'PRODUCE_FAILED', err.message, err.hint);
        break;
      }
    }
  }
  if (joined.role !== 'viewer') await publish();
  state.phase = 'joined';
  state.step = 'done';

  ui.mute.onclick = async () => {
    const audio = producers.find((p) => p.kind === 'audio');
    if (!audio) return;
    if (audio.paused) {
      audio.resume();
      await sig.request('resumeProducer', { producerId: audio.id });
      ui.mute.textContent = 'Mute';
    } else {
      audio.pause();
      await sig.request('pauseProducer', { producerId: audio.id });
      ui.mute.textContent = 'Unmute';
    }
  };
  ui.record.onclick = async () => {
    try {
      renderRecording(await sig.request<RecordingState>('setRecording', { enabled: !state.recording?.recording }));
    } catch (e) {
      const err = e as SignalingError;
      showError(err.code, err.message, err.hint);
    }
  };
  ui.leave.onclick = async () => {
    await sig.request('leave').catch(() => {});
    state.phase = 'left';
    for (const t of stream?.getTracks() ?? []) t.stop();
    sig.close();
    setStatus('You left the meeting.');
  };
  setInterval(() => void sig.request('ping').catch(() => {}), 10_000);

  Object.assign(verbatim, {
    request: (method: string, data?: Json) => sig.request(method, data),
  });
}

/** Test hook: per remote track, the inbound-rtp counters of the consumer's own SSRC. */
async function inboundStats(): Promise<{ peerId: string; kind: string; bytesReceived: number; packetsReceived: number; framesDecoded: number; frameWidth: number; frameHeight: number }[]> {
  const out = [];
  for (const { consumer, peerId } of state.consumers.values()) {
    const ssrc = consumer.rtpParameters.encodings?.[0]?.ssrc;
    const report = await consumer.getStats();
    // getStats() reports are untyped (RTCStatsReport maps to any): read the inbound-rtp fields.
    for (const s of report.values() as Iterable<Partial<RTCInboundRtpStreamStats>>) {
      // The recv PeerConnection also reports mediasoup's probator stream (0 frames): match by SSRC.
      if (s.type === 'inbound-rtp' && s.ssrc === ssrc) {
        out.push({ peerId, kind: consumer.kind, bytesReceived: s.bytesReceived ?? 0, packetsReceived: s.packetsReceived ?? 0, framesDecoded: s.framesDecoded ?? 0, frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0 });
      }
    }
  }
  return out;
}

/** Test hook: the candidate types ("host", "relay", ...) of each transport's selected ICE pair. */
async function iceRoutes(): Promise<{ direction: string; local: string; remote: string }[]> {
  const out = [];
  for (const t of state.transports) {
    const report = await t.getStats();
    const stats = [...(report.values() as Iterable<Record<string, unknown>>)];
    const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
    const pair = stats.find((s) => s.id === transport?.selectedCandidatePairId);
    const candidate = (id: unknown) => stats.find((s) => s.id === id)?.candidateType as string | undefined;
    if (pair) out.push({ direction: t.direction, local: candidate(pair.localCandidateId) ?? '?', remote: candidate(pair.remoteCandidateId) ?? '?' });
  }
  return out;
}

const verbatim = { state, largeState, inboundStats, iceRoutes } as Record<string, unknown>;
(window as unknown as { verbatim: unknown }).verbatim = verbatim;

main().catch((e: unknown) => {
  state.phase = 'error';
  const err = e as SignalingError;
  showError(err.code ?? 'CLIENT_ERROR', err.message ?? String(e));
});
