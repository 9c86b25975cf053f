/**
 * A token bucket: `ratePerSec` tokens a second refill up to `burst`; each take() spends one.
 * Used per signaling connection, so one client's flood costs only its own requests, and to
 * tell a flood (refusals piling up faster than they drain) from a client that is a little fast.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Spends a token; false when the bucket is empty (the caller refuses the request). */
  take(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.ratePerSec);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
