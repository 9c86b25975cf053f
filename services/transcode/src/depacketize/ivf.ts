/**
 * IVF container with a 90 kHz timebase (the RTP video clock): frames keep their real
 * presentation times, so variable frame rate survives into the mux. Used for VP8, and
 * for H.264 (ffmpeg reads an 'H264' fourcc in IVF).
 */
export function writeIvf(fourcc: 'VP80' | 'H264', width: number, height: number, frames: { pts: number; data: Buffer }[]): Buffer {
  const header = Buffer.alloc(32);
  header.write('DKIF', 0, 'latin1');
  header.writeUInt16LE(0, 4);
  header.writeUInt16LE(32, 6);
  header.write(fourcc, 8, 'latin1');
  header.writeUInt16LE(width, 12);
  header.writeUInt16LE(height, 14);
  header.writeUInt32LE(90000, 16); // timebase denominator
  header.writeUInt32LE(1, 20);
  // ffmpeg reads this field as the stream duration in timebase units, not a frame count.
  header.writeUInt32LE(frames.at(-1)?.pts ?? 0, 24);
  const out: Buffer[] = [header];
  for (const f of frames) {
    const fh = Buffer.alloc(12);
    fh.writeUInt32LE(f.data.length, 0);
    fh.writeBigUInt64LE(BigInt(f.pts), 4);
    out.push(fh, f.data);
  }
  return Buffer.concat(out);
}
