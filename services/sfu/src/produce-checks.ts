import type { types as ms } from 'mediasoup';
import { VerbatimError } from '../../lib/errors.ts';
import type { Peer } from './peer.ts';

/** Per-participant limits (SFU_MAX_*_PER_PEER). */
export interface PeerLimits {
  transports: number;
  producers: number;
  consumers: number;
}

/**
 * What a produce request must satisfy beyond its schema, checked before mediasoup sees it:
 * a send transport, codecs of the producer's kind, the producer limit, and no SSRC / MID /
 * RID that mediasoup's RTP listener would refuse inside the worker (RtpListener::AddProducer:
 * every SSRC and RTX SSRC once per transport, every MID once, a RID twice only with a MID).
 */
export function checkProduce(peer: Peer, transport: ms.Transport, kind: ms.MediaKind, rtp: ms.RtpParameters, limits: PeerLimits): void {
  if (!transport.appData.ingest && transport.appData.direction !== 'send') {
    throw new VerbatimError('WRONG_DIRECTION', `transport ${transport.id} is a recv transport; produce on a send transport`, { hint: 'Create one with createWebRtcTransport {direction: "send"}.' });
  }
  const wrong = rtp.codecs.find((c) => c.mimeType.split('/')[0]!.toLowerCase() !== kind);
  if (wrong) throw new VerbatimError('KIND_MISMATCH', `a ${kind} producer cannot use codec ${wrong.mimeType}`, { hint: `Send ${kind}/* codecs for kind "${kind}".` });
  if (peer.producers.size >= limits.producers) {
    throw new VerbatimError('LIMIT_EXCEEDED', `you already publish ${peer.producers.size} tracks; the limit is ${limits.producers}`, { hint: 'Close a track first, or ask the operator about SFU_MAX_PRODUCERS_PER_PEER.' });
  }
  const used = { ssrcs: new Set<number>(), mids: new Set<string>(), rids: new Set<string>() };
  for (const p of peer.producers.values()) {
    if (p.appData.transportId !== transport.id || p.closed) continue;
    collect(p.rtpParameters, used.ssrcs, used.rids);
    if (p.rtpParameters.mid) used.mids.add(p.rtpParameters.mid);
  }
  const duplicate = (what: string) => new VerbatimError('DUPLICATE_STREAM', `${what} is already used on transport ${transport.id}`, { hint: 'Each SSRC and MID may be used once per transport (RIDs too without a MID).' });
  const mine = { ssrcs: new Set<number>(), rids: new Set<string>() };
  for (const e of rtp.encodings ?? []) {
    for (const ssrc of [e.ssrc, e.rtx?.ssrc]) {
      if (!ssrc) continue;
      if (used.ssrcs.has(ssrc) || mine.ssrcs.has(ssrc)) throw duplicate(`SSRC ${ssrc}`);
      mine.ssrcs.add(ssrc);
    }
    if (e.rid) {
      if (mine.rids.has(e.rid) || (!rtp.mid && used.rids.has(e.rid))) throw duplicate(`RID ${e.rid}`);
      mine.rids.add(e.rid);
    }
  }
  if (rtp.mid && used.mids.has(rtp.mid)) throw duplicate(`MID ${rtp.mid}`);
}

function collect(rtp: ms.RtpParameters, ssrcs: Set<number>, rids: Set<string>): void {
  for (const e of rtp.encodings ?? []) {
    if (e.ssrc) ssrcs.add(e.ssrc);
    if (e.rtx?.ssrc) ssrcs.add(e.rtx.ssrc);
    if (e.rid) rids.add(e.rid);
  }
}
