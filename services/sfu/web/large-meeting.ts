/// <reference lib="dom" />
import type { types } from 'mediasoup-client';

/**
 * The meeting page's large-meeting parts (issue 14): simulcast publishing, preferred layers from
 * each tile's rendered size, the active speaker and last-N video set, and all-hands roles (raise
 * hand, host promotes). Kept apart from meeting.ts's join flow; meeting.ts calls in here.
 */

type Json = Record<string, unknown>;
export type Request = <T = Json>(method: string, data?: Json) => Promise<T>;
export type Role = 'host' | 'speaker' | 'viewer' | 'participant';

/**
 * Camera simulcast: a quarter, half and full resolution layer (180p/360p/720p from a 720p camera).
 * Each layer's cap keeps a small tile cheap; mediasoup switches a viewer between them by its
 * preferred layer and its bandwidth estimate.
 */
export const SIMULCAST_ENCODINGS: RTCRtpEncodingParameters[] = [
  { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
];
/** The camera asked for; the layer heights below are what it gives (a smaller camera gives proportionally less). */
export const CAMERA_CONSTRAINTS: MediaTrackConstraints = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 15 } };
const TOP_LAYER_HEIGHT = 720;

/**
 * Video goes out in as many layers as Chromium sends for the camera's height (its simulcast table:
 * three from 540 lines, two from 270, else one); a layer it would never send is not announced,
 * so a small camera publishes one plain stream as before.
 */
export function produceOptions(track: MediaStreamTrack): types.ProducerOptions {
  if (track.kind !== 'video') return { track };
  const height = track.getSettings().height ?? 0;
  const layers = height >= 540 ? 3 : height >= 270 ? 2 : 1;
  if (layers === 1) return { track };
  return { track, encodings: SIMULCAST_ENCODINGS.slice(3 - layers).map((e) => ({ ...e })), codecOptions: { videoGoogleStartBitrate: 1000 } };
}

/** Spatial layers a consumer offers, from its scalability mode (L3T3: 3); 1 for a single stream. */
function spatialLayers(consumer: types.Consumer): number {
  const mode = consumer.rtpParameters.encodings?.[0]?.scalabilityMode ?? '';
  const m = /^[LS](\d)T\d/.exec(mode);
  return m ? Number(m[1]) : 1;
}

/** The smallest layer at least as tall as the tile shows (device pixels), else the top one. */
export function layerForHeight(pixels: number, layers: number): number {
  for (let i = 0; i < layers; i++) if (TOP_LAYER_HEIGHT / 2 ** (layers - 1 - i) >= pixels) return i;
  return layers - 1;
}

export const largeState = {
  role: 'participant' as Role,
  activeSpeaker: null as string | null,
  videoSet: [] as string[],
  handRaised: false,
  /** Per consumer: the layer asked for (from the tile) and the one mediasoup reports forwarding. */
  layers: new Map<string, { preferred: number; current: number | null }>(),
};

/**
 * Asks for the layer the tile needs whenever its rendered size changes (ResizeObserver):
 * a shrinking tile gets a lower layer, a growing one a higher one.
 */
export function watchTileSize(request: Request, consumer: types.Consumer, video: HTMLVideoElement): void {
  const layers = spatialLayers(consumer);
  if (layers < 2) return;
  const observer = new ResizeObserver(() => {
    if (consumer.closed) return observer.disconnect();
    const preferred = layerForHeight(video.getBoundingClientRect().height * devicePixelRatio, layers);
    const known = largeState.layers.get(consumer.id);
    if (known?.preferred === preferred) return;
    largeState.layers.set(consumer.id, { preferred, current: known?.current ?? null });
    void request('setPreferredLayers', { consumerId: consumer.id, spatialLayer: preferred }).catch(() => {});
  });
  observer.observe(video);
  consumer.observer.on('close', () => observer.disconnect());
}

const el = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function tileOf(peerId: string): HTMLElement | null {
  return document.querySelector<HTMLElement>(`#remotes [data-peer="${CSS.escape(peerId)}"]`);
}

function nameOf(peerId: string, selfId: string): string {
  if (peerId === selfId) return 'You';
  return tileOf(peerId)?.querySelector('figcaption')?.textContent ?? peerId;
}

function renderSpeaker(selfId: string): void {
  const id = largeState.activeSpeaker;
  el('active-speaker').textContent = id ? `Speaking: ${nameOf(id, selfId)}` : '';
  for (const tile of document.querySelectorAll<HTMLElement>('#remotes [data-peer]')) {
    tile.classList.toggle('speaking', tile.dataset.peer === id);
    // Outside the last-N set the server sends no video for this tile.
    tile.classList.toggle('video-off', !largeState.videoSet.includes(tile.dataset.peer ?? ''));
  }
}

function renderHand(): void {
  const button = el<HTMLButtonElement>('raise-hand');
  button.hidden = largeState.role !== 'viewer';
  button.textContent = largeState.handRaised ? 'Lower hand' : 'Raise hand';
  button.setAttribute('aria-pressed', String(largeState.handRaised));
}

function renderRaisedHand(request: Request, peerId: string, name: string, raised: boolean): void {
  const list = el('hands');
  list.querySelector(`[data-peer="${CSS.escape(peerId)}"]`)?.remove();
  if (raised) {
    const item = document.createElement('li');
    item.dataset.peer = peerId;
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = `Promote ${name}`;
    button.onclick = () => void request('promote', { peerId }).catch(() => {});
    item.append(`${name} raised a hand `, button);
    list.append(item);
  }
  el('hands-section').hidden = list.childElementCount === 0;
}

/**
 * Sets up the role, speaker and hand UI after joining. `publish` starts the camera and mic:
 * called when a host promotes this viewer. Returns the handler of this module's notifications.
 */
export function setupLargeMeeting(
  request: Request,
  joined: { peerId: string; role?: Role; activeSpeaker?: string | null; videoSet?: string[]; raisedHands?: { peerId: string; name: string }[] },
  publish: () => Promise<void>,
): (name: string, data: Json) => void {
  largeState.role = joined.role ?? 'participant';
  largeState.activeSpeaker = joined.activeSpeaker ?? null;
  largeState.videoSet = joined.videoSet ?? [];
  for (const h of joined.raisedHands ?? []) renderRaisedHand(request, h.peerId, h.name, true);
  renderHand();
  renderSpeaker(joined.peerId);
  el<HTMLButtonElement>('raise-hand').onclick = async () => {
    const r = await request<{ raised: boolean }>('raiseHand', { raised: !largeState.handRaised });
    largeState.handRaised = r.raised;
    renderHand();
  };
  return (name, data) => {
    switch (name) {
      case 'activeSpeaker':
        largeState.activeSpeaker = data.peerId as string;
        renderSpeaker(joined.peerId);
        break;
      case 'videoSet':
        largeState.videoSet = data.peerIds as string[];
        renderSpeaker(joined.peerId);
        break;
      case 'consumerLayers': {
        const known = largeState.layers.get(data.consumerId as string);
        largeState.layers.set(data.consumerId as string, { preferred: known?.preferred ?? -1, current: data.spatialLayer as number | null });
        break;
      }
      case 'handRaised':
        renderRaisedHand(request, data.peerId as string, data.name as string, data.raised as boolean);
        break;
      case 'roleChanged':
        largeState.role = data.role as Role;
        largeState.handRaised = false;
        renderHand();
        if (largeState.role === 'speaker') {
          publish().catch((e: unknown) => (el('status').textContent = `Promoted to speaker, but the camera or microphone could not start: ${(e as Error).message}`));
        }
        break;
    }
  };
}

/** A new remote tile joins the speaker/last-N highlighting. */
export function tileAdded(selfId: string): void {
  renderSpeaker(selfId);
}
