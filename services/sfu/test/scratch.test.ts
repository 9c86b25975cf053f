import { afterAll, beforeAll, expect, it } from 'vitest';
import { testBackends } from '../../../testing/databases.ts';
import { TestSignalingClient, rawHttp, startTestSfu, type TestSfu } from '../../../testing/sfu-harness.ts';

const pg = (await testBackends())[1]!;
let sfu: TestSfu;
beforeAll(async () => { sfu = await startTestSfu({ db: await pg.open() }); });
afterAll(async () => { await sfu?.close(); await pg.cleanup(); });

it('raw', async () => {
  console.log(await rawHttp(sfu.url, 'GET /api/v1/rooms/%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n'));
  console.log(await rawHttp(sfu.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
});
it('flood', async () => {
  await sfu.admin('POST', '/rooms', { id: 'r1' });
  const c = await TestSignalingClient.connect(sfu.url);
  const tok = (await sfu.admin('POST', '/rooms/r1/tokens', { identity: 'a', name: 'a' })).body.token;
  await c.request('join', { token: tok });
  const answers: any[] = [];
  c.ws.on('message', (raw) => { const f = JSON.parse(raw.toString()); if (f.id >= 10000) answers.push(f); });
  for (let i = 0; i < 999; i++) c.ws.send(JSON.stringify({ v: 1, id: 10_000 + i, method: 'createWebRtcTransport', data: { direction: 'send' } }));
  await new Promise((r) => setTimeout(r, 5000));
  const codes: Record<string, number> = {};
  for (const a of answers) codes[a.ok ? 'ok' : a.error.code] = (codes[a.ok ? 'ok' : a.error.code] ?? 0) + 1;
  console.log(codes, c.closed, answers.slice(-3));
});
