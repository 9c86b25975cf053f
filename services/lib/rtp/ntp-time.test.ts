import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NTP_FRACTION_UNITS, NTP_UNIX_OFFSET, ntpToIso, ntpToUnixUs, unixUsToNtp } from './ntp-time.ts';

describe('NTP time', () => {
  it('converts NTP timestamps to the Unix clock', () => {
    expect(ntpToUnixUs(NTP_UNIX_OFFSET, 0)).toBe(0);
    expect(ntpToUnixUs(NTP_UNIX_OFFSET + 1_700_000_000, 0x8000_0000)).toBe(1_700_000_000_500_000);
    expect(ntpToUnixUs(NTP_UNIX_OFFSET + 1, NTP_FRACTION_UNITS / 4)).toBe(1_250_000);
    expect(ntpToIso(NTP_UNIX_OFFSET + 1_700_000_000, 0x8000_0000)).toBe('2023-11-14T22:13:20.500Z');
    expect(ntpToIso(NTP_UNIX_OFFSET + 1, 0xffff_ffff)).toBe('1970-01-01T00:00:01.999Z'); // truncated to the ms
    expect(ntpToIso(NTP_UNIX_OFFSET - 1, 0)).toBe('');
  });

  it('converts the Unix clock to NTP and back to the same µs', () => {
    expect(unixUsToNtp(1_700_000_000_500_000)).toEqual({ seconds: NTP_UNIX_OFFSET + 1_700_000_000, fraction: 0x8000_0000 });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2_000_000_000_000_000 }), (us) => {
        const ntp = unixUsToNtp(us);
        expect(ntp.fraction).toBeGreaterThanOrEqual(0);
        expect(ntp.fraction).toBeLessThan(NTP_FRACTION_UNITS);
        expect(ntpToUnixUs(ntp.seconds, ntp.fraction)).toBe(us);
      }),
    );
  });
});
