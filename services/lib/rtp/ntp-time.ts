/** NTP timestamps (RFC 5905 §6: 32-bit seconds since 1900 + 32-bit fraction) ↔ the Unix clock. */

/** Seconds between the NTP epoch (1900-01-01) and the Unix epoch (1970-01-01). */
export const NTP_UNIX_OFFSET = 2_208_988_800;
/** One second in NTP fraction units. */
export const NTP_FRACTION_UNITS = 0x1_0000_0000;

/** µs since the Unix epoch of an NTP timestamp (rounded to the µs). */
export function ntpToUnixUs(seconds: number, fraction: number): number {
  return Math.round((seconds - NTP_UNIX_OFFSET + fraction / NTP_FRACTION_UNITS) * 1e6);
}

/** ISO 8601 of an NTP timestamp (ms precision, fraction truncated); '' when it falls before 1970. */
export function ntpToIso(seconds: number, fraction: number): string {
  const unixMs = (seconds - NTP_UNIX_OFFSET) * 1000 + Math.floor((fraction / NTP_FRACTION_UNITS) * 1000);
  return Number.isFinite(unixMs) && unixMs >= 0 ? new Date(unixMs).toISOString() : '';
}

/** The NTP timestamp of a Unix time in µs (fraction rounded to the nearest unit). */
export function unixUsToNtp(unixUs: number): { seconds: number; fraction: number } {
  let seconds = Math.floor(unixUs / 1e6);
  let fraction = Math.round(((unixUs - seconds * 1e6) / 1e6) * NTP_FRACTION_UNITS);
  if (fraction === NTP_FRACTION_UNITS) {
    seconds++;
    fraction = 0;
  }
  return { seconds: seconds + NTP_UNIX_OFFSET, fraction };
}
