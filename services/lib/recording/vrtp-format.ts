import { crc32 } from 'node:zlib';
import { RECORDING_FORMAT_VERSION, TrackHeaderSchema, type TrackHeader } from '../contracts/recording.ts';
import { VerbatimError } from '../errors.ts';

/**
 * A track segment file, self-describing and crash-safe (after Janus's MJR idea):
 *
 *   magic "VRBTMRTP" (8) | version u16 | header length u32 | header JSON | header CRC32 u32
 *   then records, each:
 *   type u8 (1 RTP, 2 RTCP) | flags u8 | length u16 | arrival µs u64 | bytes | CRC32 u32
 *
 * All integers big-endian. Each record's CRC covers its 12-byte prefix and its bytes,
 * so a reader after a crash keeps every record up to the last one whose CRC holds and
 * stops cleanly at a torn tail.
 */
export const MAGIC = Buffer.from('VRBTMRTP', 'latin1');
export const RECORD_PREFIX = 12;
export const RECORD_OVERHEAD = RECORD_PREFIX + 4;
export const enum RecordType {
  RTP = 1,
  RTCP = 2,
}

export interface PacketRecord {
  type: RecordType;
  arrivalUs: number;
  data: Buffer;
  /** Byte offset of the record in the file. */
  offset: number;
}

export function encodeFileHeader(header: TrackHeader): Buffer {
  const json = Buffer.from(JSON.stringify(TrackHeaderSchema.parse(header)), 'utf8');
  const out = Buffer.allocUnsafe(8 + 2 + 4 + json.length + 4);
  MAGIC.copy(out, 0);
  out.writeUInt16BE(RECORDING_FORMAT_VERSION, 8);
  out.writeUInt32BE(json.length, 10);
  json.copy(out, 14);
  out.writeUInt32BE(crc32(out.subarray(0, 14 + json.length)), 14 + json.length);
  return out;
}

/** Writes one record into `buf` at `offset` (caller guarantees room); returns the new offset. */
export function writeRecord(buf: Buffer, offset: number, type: RecordType, arrivalUs: number, data: Buffer | Uint8Array, dataStart = 0, dataEnd = data.length): number {
  const len = dataEnd - dataStart;
  buf[offset] = type;
  buf[offset + 1] = 0;
  buf.writeUInt16BE(len, offset + 2);
  // µs since the epoch fits in 53 bits for millennia; split to avoid BigInt on the hot path.
  buf.writeUInt32BE(Math.floor(arrivalUs / 0x1_0000_0000), offset + 4);
  buf.writeUInt32BE(arrivalUs >>> 0, offset + 8);
  // Buffer#copy does not allocate a view per packet (the recorder's hot path).
  if (Buffer.isBuffer(data)) data.copy(buf, offset + RECORD_PREFIX, dataStart, dataEnd);
  else buf.set(data.subarray(dataStart, dataEnd), offset + RECORD_PREFIX);
  const end = offset + RECORD_PREFIX + len;
  buf.writeUInt32BE(crc32(buf.subarray(offset, end)), end);
  return end + 4;
}

export function encodeRecord(type: RecordType, arrivalUs: number, data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(RECORD_OVERHEAD + data.length);
  writeRecord(out, 0, type, arrivalUs, data);
  return out;
}

export interface ParsedFile {
  header: TrackHeader;
  headerBytes: number;
  records: PacketRecord[];
  /** Bytes after the last valid record (a torn tail from a crash, or garbage). */
  tornBytes: number;
  /** Why reading stopped before the end, if it did. */
  stopReason?: 'truncated-record' | 'crc-mismatch' | 'bad-type';
}

export function parseHeader(buf: Buffer, file = 'recording'): { header: TrackHeader; headerBytes: number } {
  if (buf.length < 18 || !buf.subarray(0, 8).equals(MAGIC)) {
    throw new VerbatimError('BAD_REQUEST', `${file} is not a Verbatim recording (bad magic)`, { hint: 'Pass a .vrtp track file written by the recorder.' });
  }
  const version = buf.readUInt16BE(8);
  if (version !== RECORDING_FORMAT_VERSION) {
    throw new VerbatimError('UNSUPPORTED_VERSION', `${file} has format version ${version}; this build reads version ${RECORDING_FORMAT_VERSION}`, { hint: 'Use a Verbatim release that matches the recorder that wrote it.' });
  }
  const len = buf.readUInt32BE(10);
  const end = 14 + len;
  if (buf.length < end + 4 || buf.readUInt32BE(end) !== crc32(buf.subarray(0, end))) {
    throw new VerbatimError('BAD_REQUEST', `${file} has a damaged header (CRC mismatch or truncated)`, { hint: 'The file cannot be trusted; restore it from a replica.' });
  }
  const header = TrackHeaderSchema.parse(JSON.parse(buf.subarray(14, end).toString('utf8')));
  return { header, headerBytes: end + 4 };
}

/** Parses a whole file; stops at the first record that is incomplete or fails its CRC. */
export function parseRecording(buf: Buffer, file?: string): ParsedFile {
  const { header, headerBytes } = parseHeader(buf, file);
  const records: PacketRecord[] = [];
  let off = headerBytes;
  let stopReason: ParsedFile['stopReason'];
  while (off < buf.length) {
    if (buf.length - off < RECORD_OVERHEAD) {
      stopReason = 'truncated-record';
      break;
    }
    const type = buf[off]! as RecordType;
    const len = buf.readUInt16BE(off + 2);
    const end = off + RECORD_PREFIX + len;
    if (end + 4 > buf.length) {
      stopReason = 'truncated-record';
      break;
    }
    if (buf.readUInt32BE(end) !== crc32(buf.subarray(off, end))) {
      stopReason = 'crc-mismatch';
      break;
    }
    if (type !== RecordType.RTP && type !== RecordType.RTCP) {
      stopReason = 'bad-type';
      break;
    }
    const arrivalUs = buf.readUInt32BE(off + 4) * 0x1_0000_0000 + buf.readUInt32BE(off + 8);
    records.push({ type, arrivalUs, data: buf.subarray(off + RECORD_PREFIX, end), offset: off });
    off = end + 4;
  }
  return { header, headerBytes, records, tornBytes: buf.length - off, ...(stopReason ? { stopReason } : {}) };
}
