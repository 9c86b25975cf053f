import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sleep } from './children.ts';
import { startFleetProc, type FleetProc } from './fleet-proc.ts';
import { CpuMeter } from './proc.ts';
import type { BenchRecorder, RecorderStats } from './recorder-proc.ts';
import { round } from './results.ts';
import type { BenchSfu } from './sfu-proc.ts';
import { freeUdpPort, startBlast, type BlastTrack, type TemplateInfo } from './udp-blast.ts';

const storedOf = (s: RecorderStats) => s.workers.reduce((a, w) => a + w.stored, 0);

/**
 * The recorder bench's metric 4: mediasoup worker CPU of a room of ingest publishers (audio +
 * video each), alone, with the recording tap, and with one WebRTC viewer bot consuming every
 * producer instead; the tap's cost is reported in units of that viewer's.
 */
export async function measureSfuTap(plan: { templates: Record<string, TemplateInfo>; publishers: number; seconds: number }, sfu: BenchSfu, rec: BenchRecorder) {
  const ctx = plan;
  const room = `bench-tap-${randomBytes(3).toString('hex')}`;
  await sfu.admin('POST', '/rooms', { id: room });
  const tracks: BlastTrack[] = [];
  for (let i = 0; i < plan.publishers; i++) {
    const ssrc = 0x30000000 + 2 * i;
    const res = await sfu.admin<{ tracks: { kind: 'audio' | 'video'; rtpPort: number; ssrc: number; payloadType: number }[] }>('POST', `/rooms/${room}/ingest`, {
      identity: `pub${i}`,
      name: `Publisher ${i}`,
      tracks: [
        { kind: 'audio', ssrc, payloadType: 111 },
        { kind: 'video', ssrc: ssrc + 1, payloadType: 96 },
      ],
    });
    for (const t of res.tracks) tracks.push({ port: t.rtpPort, ssrc: t.ssrc, payloadType: t.payloadType, template: t.kind === 'audio' ? 'opus48k' : i % 2 ? 'vp8lo' : 'vp8hi' });
  }
  const workers = (await sfu.admin<{ workers: { pid: number }[] }>('GET', '/workers')).workers;
  if (workers.length !== 1) throw new Error(`expected one mediasoup worker, got ${workers.length}`);
  const meter = new CpuMeter([workers[0]!.pid]);
  const blast = startBlast(ctx.templates, tracks, 3600, { workDir: mkdtempSync(path.join(os.tmpdir(), 'verbatim-bench-tap-')), srcPort: await freeUdpPort(), seed: 99 });
  const measure = async () => {
    const c0 = meter.read();
    const r0 = storedOf(await rec.stats());
    const t0 = performance.now();
    await sleep(plan.seconds * 1000);
    const c1 = meter.read();
    const wallS = (performance.now() - t0) / 1000;
    const r1 = storedOf(await rec.stats());
    return { cpuS: round(c1 - c0, 3), wallS: round(wallS, 2), pct: ((c1 - c0) / wallS) * 100, recorderPps: (r1 - r0) / wallS };
  };
  try {
    await sleep(plan.seconds < 5 ? 500 : 1000);
    const off = await measure();
    await sfu.admin('PUT', `/rooms/${room}/recording`, { enabled: true });
    // Steady state: the recorder holds a track per producer and stores about what comes in
    // (video flows from its next keyframe, at most 2 s).
    const inPps = tracks.reduce((a, t) => a + ctx.templates[t.template]!.pps, 0);
    const deadline = Date.now() + 15_000;
    let prev = storedOf(await rec.stats());
    for (;;) {
      await sleep(500);
      const s = await rec.stats();
      const rate = (storedOf(s) - prev) / 0.5;
      prev = storedOf(s);
      const attached = s.workers.reduce((a, w) => a + w.tracks, 0) >= tracks.length;
      if ((attached && rate >= 0.9 * inPps) || Date.now() > deadline) break;
    }
    await sleep(500);
    const on = await measure();
    await sfu.admin('PUT', `/rooms/${room}/recording`, { enabled: false });
    await sleep(1000);
    // The same publishers consumed by one real WebRTC viewer (a node-datachannel bot: ICE, DTLS,
    // SRTP, RTCP feedback) instead of the tap: what the tap costs in units of viewers.
    const base = await measure();
    const fleet = startFleetProc(undefined);
    let viewer: Awaited<ReturnType<typeof measure>>;
    let viewerReport: Awaited<ReturnType<FleetProc['report']>>['report'];
    try {
      const { token } = await sfu.admin<{ token: string }>('POST', `/rooms/${room}/tokens`, { identity: 'viewer', name: 'Viewer' });
      const joined = await fleet.join(sfu.url, [{ name: 'viewer', token }], { publish: false, consume: true });
      if (joined.joined !== 1) throw new Error(`the viewer bot did not join: ${JSON.stringify(joined.failed)}`);
      await sleep(plan.seconds < 5 ? 1500 : 3000); // video from its next keyframe
      await fleet.reset();
      viewer = await measure();
      viewerReport = (await fleet.report()).report;
    } finally {
      await fleet.close();
    }
    const b = await blast.stop();
    const tapCost = on.pct - off.pct;
    const viewerCost = viewer.pct - base.pct;
    return {
      publishers: plan.publishers,
      producers: tracks.length,
      workerPid: workers[0]!.pid,
      ppsIn: round(b.pps),
      sent: b.sent,
      off: { ...off, pct: round(off.pct, 2), recorderPps: round(off.recorderPps) },
      on: { ...on, pct: round(on.pct, 2), recorderPps: round(on.recorderPps) },
      base: { ...base, pct: round(base.pct, 2) },
      viewer: { ...viewer, pct: round(viewer.pct, 2), consumers: viewerReport.consumers, receiving: viewerReport.receiving, packetsPerS: round(viewerReport.packets / viewer.wallS), lossPct: viewerReport.lossPct },
      tapCostPct: tapCost,
      viewerCostPct: viewerCost,
      tapCostVsViewer: tapCost / viewerCost,
      // A room where each publisher has 10 viewers: its worker CPU without the tap, from the two measured costs.
      derivedOverheadPct: (tapCost / (base.pct + 10 * viewerCost)) * 100,
    };
  } finally {
    await blast.stop().catch(() => undefined);
  }
}

