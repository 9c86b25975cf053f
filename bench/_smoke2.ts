import { runCleanups, sleep } from './lib/children.ts';
import { rssBytes } from './lib/proc.ts';
import { startBenchRecorder } from './lib/recorder-proc.ts';
const r = await startBenchRecorder({});
for (let i = 0; i < 5; i++) { const p = await r.pids(); console.log(p.map((x) => Math.round((rssBytes(x) ?? 0) / 1e6))); await sleep(1000); }
await runCleanups();
