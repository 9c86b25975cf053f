import type { types as ms } from 'mediasoup';

/**
 * SDP for bots that talk to the SFU without mediasoup-client: the SFU hands out ICE/DTLS values
 * and RTP parameters, the bot turns them into the description its WebRTC stack (libdatachannel)
 * needs. The SFU side is ice-lite and never sends an SDP of its own.
 */

/** What createWebRtcTransport answers. */
export interface TransportInfo {
  id: string;
  iceParameters: ms.IceParameters;
  iceCandidates: ms.IceCandidate[];
  dtlsParameters: ms.DtlsParameters;
}

/** What consume answers (the fields the offer needs). */
export interface ConsumerInfo {
  id: string;
  kind: 'audio' | 'video';
  rtpParameters: ms.RtpParameters;
}

/** The ICE, DTLS and candidate lines every m-section of a bundled description repeats. */
function transportLines(t: TransportInfo, setup: 'actpass' | 'passive'): string[] {
  const fp = t.dtlsParameters.fingerprints.find((f) => f.algorithm === 'sha-256');
  if (!fp) throw new Error('the SFU offered no sha-256 DTLS fingerprint');
  const lines = [`a=ice-ufrag:${t.iceParameters.usernameFragment}`, `a=ice-pwd:${t.iceParameters.password}`, `a=fingerprint:sha-256 ${fp.value}`, `a=setup:${setup}`];
  // libdatachannel cannot use ICE-TCP candidates: offer UDP only.
  for (const c of t.iceCandidates.filter((x) => x.protocol === 'udp')) {
    lines.push(`a=candidate:${c.foundation} 1 udp ${c.priority} ${c.address} ${c.port} typ host`);
  }
  lines.push('a=end-of-candidates');
  return lines;
}

function sessionLines(mids: string[]): string[] {
  return ['v=0', `o=- ${Date.now()} 2 IN IP4 127.0.0.1`, 's=-', 't=0 0', 'a=ice-lite', `a=group:BUNDLE ${mids.join(' ')}`, 'a=msid-semantic: WMS *'];
}

function codecLines(codecs: ms.RtpCodecParameters[]): string[] {
  const lines: string[] = [];
  for (const c of codecs) {
    const name = c.mimeType.split('/')[1]!;
    lines.push(`a=rtpmap:${c.payloadType} ${name}/${c.clockRate}${c.channels && c.channels > 1 ? `/${c.channels}` : ''}`);
    const params = Object.entries(c.parameters ?? {}).map(([k, v]) => `${k}=${String(v)}`);
    if (params.length > 0) lines.push(`a=fmtp:${c.payloadType} ${params.join(';')}`);
    for (const fb of c.rtcpFeedback ?? []) lines.push(`a=rtcp-fb:${c.payloadType} ${fb.type}${fb.parameter ? ` ${fb.parameter}` : ''}`);
  }
  return lines;
}

/**
 * The offer for a receive transport: one sendonly m-section per consumer (by its mid), its codecs
 * and header extensions, its SSRC and, for video, its RTX SSRC grouped with FID.
 */
export function recvOffer(t: TransportInfo, consumers: ConsumerInfo[]): string {
  const mids = consumers.map((c) => c.rtpParameters.mid!);
  const lines = sessionLines(mids);
  for (const c of consumers) {
    const p = c.rtpParameters;
    lines.push(`m=${c.kind} 9 UDP/TLS/RTP/SAVPF ${p.codecs.map((x) => x.payloadType).join(' ')}`, 'c=IN IP4 127.0.0.1', 'a=rtcp:9 IN IP4 0.0.0.0');
    lines.push(...transportLines(t, 'actpass'), `a=mid:${p.mid}`, 'a=sendonly', 'a=rtcp-mux', 'a=rtcp-rsize');
    for (const h of p.headerExtensions ?? []) lines.push(`a=extmap:${h.id} ${h.uri}`);
    lines.push(...codecLines(p.codecs));
    const enc = p.encodings![0]!;
    const cname = p.rtcp?.cname ?? 'sfu';
    const msid = `${c.id} ${c.id}`;
    if (enc.rtx?.ssrc) lines.push(`a=ssrc-group:FID ${enc.ssrc} ${enc.rtx.ssrc}`);
    for (const ssrc of [enc.ssrc, enc.rtx?.ssrc].filter((s): s is number => s !== undefined)) {
      lines.push(`a=ssrc:${ssrc} cname:${cname}`, `a=ssrc:${ssrc} msid:${msid}`);
    }
  }
  return `${lines.join('\r\n')}\r\n`;
}

/** One m-section of the bot's own offer, as far as the answer needs it. */
interface OfferSection {
  kind: 'audio' | 'video';
  mid: string;
  payloadTypes: string;
  rtpmaps: string[];
}

function offerSections(offer: string): OfferSection[] {
  const out: OfferSection[] = [];
  for (const line of offer.split(/\r?\n/)) {
    const m = /^m=(audio|video) \d+ \S+ (.*)$/.exec(line);
    if (m) out.push({ kind: m[1] as 'audio' | 'video', mid: '', payloadTypes: m[2]!, rtpmaps: [] });
    const cur = out.at(-1);
    if (!cur) continue;
    if (line.startsWith('a=mid:')) cur.mid = line.slice(6);
    if (line.startsWith('a=rtpmap:') || line.startsWith('a=fmtp:')) cur.rtpmaps.push(line);
  }
  return out;
}

/** The answer to a publishing bot's offer: the SFU's transport values, recvonly, DTLS passive (the bot is the client). */
export function sendAnswer(t: TransportInfo, offer: string): string {
  const sections = offerSections(offer);
  const lines = sessionLines(sections.map((s) => s.mid));
  for (const s of sections) {
    lines.push(`m=${s.kind} 9 UDP/TLS/RTP/SAVPF ${s.payloadTypes}`, 'c=IN IP4 127.0.0.1', 'a=rtcp:9 IN IP4 0.0.0.0');
    lines.push(...transportLines(t, 'passive'), `a=mid:${s.mid}`, 'a=recvonly', 'a=rtcp-mux', 'a=rtcp-rsize', ...s.rtpmaps);
  }
  return `${lines.join('\r\n')}\r\n`;
}

/** The sha-256 fingerprint of a description (what connectWebRtcTransport needs from the bot's side). */
export function sha256Fingerprint(sdp: string): string {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\s*$/m.exec(sdp);
  if (!m) throw new Error('the local description has no sha-256 fingerprint');
  return m[1]!.toUpperCase();
}

/** Mids in the order of the description's m-sections. */
export function mids(sdp: string): string[] {
  return [...sdp.matchAll(/^a=mid:(\S+)/gm)].map((m) => m[1]!);
}
