import { Bot, type BotOptions } from './bot.ts';

/** One participant to start: its join token and a name for logs. */
export interface FleetMember {
  token: string;
  name: string;
}

export interface FleetReport {
  bots: number;
  failed: { name: string; error: string }[];
  consumers: number;
  /** Consumers that received at least one packet. */
  receiving: number;
  packets: number;
  bytes: number;
  /** Loss over all consumers, from RTP sequence numbers. */
  lossPct: number;
  /** Packets and consumers per kind (what a projection per stream needs). */
  byKind: Record<'audio' | 'video', { consumers: number; packets: number }>;
  /** Per bot: join-to-media-ready milliseconds. */
  joinMs: number[];
  /** Frames publishers skipped because this process fell behind. */
  skippedFrames: number;
  /** Publishers' packets refused by the WebRTC stack, and publishers whose track closed. */
  sendErrors: number;
  sendersStopped: number;
}

/**
 * Many bots in one process (a process per bot would cost ~75 MB each). Joins start `spreadMs`
 * apart (0: all at once); a bot that fails is reported with its error, the others carry on.
 */
export class Fleet {
  readonly bots: Bot[] = [];
  readonly failed: { name: string; error: string }[] = [];

  async join(url: string, members: FleetMember[], opts: BotOptions & { spreadMs?: number } = {}): Promise<void> {
    const spread = opts.spreadMs ?? 0;
    await Promise.all(
      members.map(async (m, i) => {
        if (spread > 0) await new Promise((r) => setTimeout(r, i * spread));
        try {
          this.bots.push(await Bot.join(url, m.token, m.name, opts));
        } catch (err) {
          this.failed.push({ name: m.name, error: (err as Error).message });
        }
      }),
    );
  }

  report(): FleetReport {
    const consumers = this.bots.flatMap((b) => b.received());
    const expected = consumers.reduce((n, c) => n + c.expected, 0);
    const packets = consumers.reduce((n, c) => n + c.packets, 0);
    return {
      bots: this.bots.length,
      failed: this.failed,
      consumers: consumers.length,
      receiving: consumers.filter((c) => c.packets > 0).length,
      packets,
      bytes: consumers.reduce((n, c) => n + c.bytes, 0),
      lossPct: expected > 0 ? Math.max(0, (100 * (expected - packets)) / expected) : 0,
      byKind: {
        audio: { consumers: consumers.filter((c) => c.kind === 'audio').length, packets: consumers.filter((c) => c.kind === 'audio').reduce((n, c) => n + c.packets, 0) },
        video: { consumers: consumers.filter((c) => c.kind === 'video').length, packets: consumers.filter((c) => c.kind === 'video').reduce((n, c) => n + c.packets, 0) },
      },
      joinMs: this.bots.map((b) => b.timings.connected),
      skippedFrames: this.bots.reduce((n, b) => n + b.senders.reduce((m, x) => m + x.skipped, 0), 0),
      sendErrors: this.bots.reduce((n, b) => n + b.senders.reduce((m, x) => m + x.sendErrors, 0), 0),
      sendersStopped: this.bots.reduce((n, b) => n + b.senders.filter((x) => x.stopped).length, 0),
    };
  }

  /** Zeroes every consumer's counters (to measure one window). */
  resetCounters(): void {
    for (const b of this.bots) b.resetCounters();
  }

  close(): void {
    for (const b of this.bots.splice(0)) b.close();
  }
}
