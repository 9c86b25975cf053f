import { VerbatimError } from '../../lib/errors.ts';
import { inspectFile, verifySessionDir, type InspectResult, type PacketLine, type VerifyResult } from './inspect.ts';

/**
 * `verbatim recording ...`: operator commands over raw recordings. Output goes through
 * `out` so tests can capture it; the return value is the process exit code
 * (0 ok, 1 bad file or failed verification, 2 usage error).
 */
export const RECORDING_USAGE = [
  'usage: verbatim recording inspect <file.vrtp> [--header | --packets] [--json]',
  '       verbatim recording verify <session dir> [--json]',
  '',
].join('\n');

export async function runRecordingCommand(args: string[], out: (s: string) => void): Promise<number> {
  const [sub, ...rest] = args;
  const flags = new Set(rest.filter((a) => a.startsWith('--')));
  const positional = rest.filter((a) => !a.startsWith('--'));
  const usage = (why: string): number => {
    out(`${why}\n${RECORDING_USAGE}`);
    return 2;
  };
  const allowed = sub === 'inspect' ? ['--header', '--packets', '--json'] : ['--json'];
  if (sub === 'help' || sub === '--help' || sub === undefined) {
    out(RECORDING_USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'inspect' && sub !== 'verify') return usage(`unknown recording command "${sub}"`);
  const unknown = [...flags].filter((f) => !allowed.includes(f));
  if (unknown.length) return usage(`unknown option ${unknown.join(', ')} for "recording ${sub}"`);
  if (positional.length !== 1) return usage(`"recording ${sub}" takes exactly one ${sub === 'inspect' ? 'file' : 'session directory'}`);
  const target = positional[0]!;

  try {
    if (sub === 'inspect') {
      if (flags.has('--header') && flags.has('--packets')) return usage('--header and --packets cannot be combined');
      if (flags.has('--header')) {
        out(`${JSON.stringify(inspectFile(target).header, null, 2)}\n`);
        return 0;
      }
      const result = inspectFile(target, { packets: flags.has('--packets') });
      if (flags.has('--json')) out(`${JSON.stringify(result, null, 2)}\n`);
      else if (flags.has('--packets')) out(formatPackets(result));
      else out(formatSummary(result));
      return 0;
    }
    const result = verifySessionDir(target);
    out(flags.has('--json') ? `${JSON.stringify(result, null, 2)}\n` : formatVerify(result));
    return result.ok ? 0 : 1;
  } catch (err) {
    if (!(err instanceof VerbatimError)) throw err;
    out(`error ${err.code}: ${err.message}\n${err.hint ? `fix: ${err.hint}\n` : ''}`);
    return 1;
  }
}

const seconds = (s: number) => `${s.toFixed(3)} s`;
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

export function formatSummary(r: InspectResult): string {
  const h = r.header;
  const c = h.codec;
  const codec = [c.mimeType, `${c.clockRate} Hz`, c.channels ? `${c.channels} ch` : '', `pt ${c.payloadType}`].filter(Boolean).join(', ');
  const rtp = r.rtp;
  const rows: [string, string][] = [
    ['file', `${r.file} (${r.bytes} bytes)`],
    ['room/session', `${h.room} / ${h.session}`],
    ['track', `${h.track} segment ${h.segment}`],
    ['participant', `${h.participant.name} (${h.participant.id})`],
    ['kind', h.kind],
    ['codec', codec],
    ['ssrc', `${h.ssrc} (0x${h.ssrc.toString(16).padStart(8, '0')})`],
    ['started at', h.startedAt],
    ['consent', [h.consent.decision, h.consent.method].filter(Boolean).join(' / ')],
    ['packets', `${r.records.rtp} RTP, ${r.records.rtcp} RTCP${rtp.malformed || r.rtcp.malformed ? ` (${rtp.malformed + r.rtcp.malformed} malformed)` : ''}`],
    ['duration', `${seconds(rtp.durationSeconds)} by arrival, ${seconds(rtp.rtpTimestampSpanSeconds)} by RTP timestamp`],
  ];
  if (rtp.firstSequence !== null) {
    rows.push(
      ['sequence', `${rtp.firstSequence} .. ${rtp.lastSequence}: ${plural(rtp.sequenceGaps, 'missing packet')}, ${plural(rtp.duplicates, 'duplicate')}, ${rtp.outOfOrder} out of order`],
      ['timestamps', `${rtp.firstTimestamp} .. ${rtp.lastTimestamp}`],
      ['payload types', rtp.payloadTypes.join(', ')],
      ['ssrcs seen', rtp.ssrcs.join(', ')],
    );
  }
  const rtcpTypes = Object.entries(r.rtcp.types).map(([k, v]) => `${k} ${v}`).join(', ');
  if (rtcpTypes) rows.push(['rtcp types', rtcpTypes]);
  rows.push(['tail', r.stopReason || r.tornBytes ? `${r.tornBytes} unreadable bytes after the last good record (${r.stopReason ?? 'torn'})` : 'clean']);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}\n`).join('');
}

export function formatPacket(p: PacketLine, t0: number): string {
  const at = `+${((p.arrivalUs - t0) / 1e6).toFixed(6)}s`;
  const head = `#${p.index} ${p.type.padEnd(4)} ${at} len=${p.length}`;
  if (p.type === 'RTP') {
    if (p.malformed) return `${head} malformed\n`;
    return `${head} seq=${p.seq} ts=${p.ts} pt=${p.pt} ssrc=${p.ssrc}${p.marker ? ' M' : ''} payload=${p.payloadLength}\n`;
  }
  const parts = (p.rtcp ?? []).map((s) => {
    if (s.sr) return `SR ssrc=${s.ssrc} ntp=${s.sr.ntpTime || `${s.sr.ntpSeconds}.${s.sr.ntpFraction}`} rtp=${s.sr.rtpTimestamp} packets=${s.sr.packetCount} octets=${s.sr.octetCount}`;
    return s.ssrc !== undefined ? `${s.name} ssrc=${s.ssrc}` : s.name;
  });
  return `${head} ${parts.join(' | ')}${p.malformed ? ' (malformed)' : ''}\n`;
}

export function formatPackets(r: InspectResult): string {
  const t0 = r.firstArrivalUs ?? 0;
  return (r.packets ?? []).map((p) => formatPacket(p, t0)).join('');
}

export function formatVerify(r: VerifyResult): string {
  const c = r.checked;
  const counts = `${plural(c.segments, 'segment')}, ${c.filesRead} files, ${c.bytes} bytes, ${c.rtpPackets} RTP / ${c.rtcpPackets} RTCP records`;
  if (r.ok) return `OK ${r.dir}: ${counts}\n`;
  const lines = r.problems.map((p) => `  ${p.code.padEnd(19)} ${p.file ?? '-'}: ${p.message}\n`);
  return `FAIL ${r.dir}: ${plural(r.problems.length, 'problem')} (${counts})\n${lines.join('')}`;
}
