import { createInterface } from 'node:readline';
import type { BotOptions } from './bot.ts';
import { Fleet, type FleetMember } from './fleet.ts';

/**
 * A fleet in a process of its own, so a benchmark can pin the bots to their own core
 * (taskset) and measure the SFU apart from them. Commands come one JSON object a line on
 * stdin ({cmd: 'join' | 'reset' | 'report' | 'close'}); each gets one JSON line on stdout.
 */
type Command = { cmd: 'join'; url: string; members: FleetMember[]; opts?: BotOptions & { spreadMs?: number } } | { cmd: 'reset' } | { cmd: 'report' } | { cmd: 'close' };

const fleet = new Fleet();
const answer = (x: unknown) => process.stdout.write(`${JSON.stringify(x)}\n`);

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const c = JSON.parse(line) as Command;
  try {
    if (c.cmd === 'join') {
      const before = fleet.bots.length;
      const failedBefore = fleet.failed.length;
      await fleet.join(c.url, c.members, c.opts ?? {});
      answer({ ok: true, joined: fleet.bots.length - before, failed: fleet.failed.slice(failedBefore), joinMs: fleet.bots.slice(before).map((b) => b.timings.connected) });
    } else if (c.cmd === 'reset') {
      fleet.resetCounters();
      answer({ ok: true });
    } else if (c.cmd === 'report') {
      answer({ ok: true, report: fleet.report(), cpuS: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6 });
    } else {
      fleet.close();
      answer({ ok: true });
      break;
    }
  } catch (err) {
    answer({ ok: false, error: (err as Error).message });
  }
}
process.exit(0);
