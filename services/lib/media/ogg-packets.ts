/** Reading Ogg back into packets: fixtures and benchmarks feed real encoder output as RTP. */
/** Packets of an Ogg stream (pages 0 and 1, the Opus headers, skipped). */
export function oggPackets(buf: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  let off = 0;
  let partial: Buffer[] = [];
  let pageNo = 0;
  while (off + 27 <= buf.length && buf.toString('latin1', off, off + 4) === 'OggS') {
    const nseg = buf[off + 26]!;
    const lacing = buf.subarray(off + 27, off + 27 + nseg);
    let p = off + 27 + nseg;
    for (const l of lacing) {
      partial.push(buf.subarray(p, p + l));
      p += l;
      if (l < 255) {
        if (pageNo >= 2) packets.push(Buffer.concat(partial));
        partial = [];
      }
    }
    off = p;
    pageNo++;
  }
  return packets;
}
