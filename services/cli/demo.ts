import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { loadConfig, type Config, type ConfigKey } from '../lib/config.ts';
import type { SessionManifest } from '../lib/contracts/recording.ts';
import { readManifest } from '../lib/recording/manifest-file.ts';
import { sessionDirOf } from '../lib/recording/session-dir.ts';
import { RoomFlagsSchema } from '../lib/contracts/room.ts';
import { VerbatimError } from '../lib/errors.ts';
import { createLogger } from '../lib/logger.ts';
import { launchChromium } from '../../testing/browser.ts';
import { fakeCameraY4m } from '../../testing/media-fixtures.ts';
import { TEST_PHRASE, fixedPhraseModelPath, modelLocation } from '../transcode/index.ts';
import { createUserWithKey } from '../audit/index.ts';
import { inOwnProcessGroup, onParentGone, rerunInOwnProcessGroup } from './process-group.ts';
import { sfuAdmin, startStack, type RunningStack } from './start.ts';

/**
 * `npm run demo`: a scripted recorded meeting on the real stack. Three headless
 * Chromium participants (one process each: the fake microphone file is per process)
 * speak espeak-ng sentences into a `consent: required` room that records and
 * transcribes; one joins late, one declines consent. After the meeting the session
 * is processed by the same launcher's transcode worker, and the demo searches the
 * transcript through the compliance API like an officer would, then checks what it
 * claims: the decliner has no tracks, the late joiner starts late, the consenting
 * participants' words are found.
 */

export interface CastMember {
  identity: string;
  name: string;
  consent: 'granted' | 'declined';
  /** Seconds after the recording started. */
  joinAfter: number;
  sentence: string;
  /** A word of the sentence that a real model's transcript should contain. */
  keyword: string;
}

/** What the demo reads from the meeting page's test hook, window.verbatim (services/sfu/web/meeting.ts). */
type MeetingWindow = Window & {
  verbatim?: {
    state: { phase: string; step?: string; error?: unknown; recording?: { recording: boolean; recordingYou: boolean } };
    signaling?: () => { readyState: number; pending: string[] };
    inboundStats(): Promise<{ peerId: string; kind: string; packetsReceived: number }[]>;
  };
};

export const CAST: readonly CastMember[] = [
  { identity: 'alice', name: 'Alice', consent: 'granted', joinAfter: 0, sentence: 'The quarterly budget review is approved.', keyword: 'budget' },
  { identity: 'carol', name: 'Carol', consent: 'declined', joinAfter: 0, sentence: 'Please do not record my voice today.', keyword: 'voice' },
  { identity: 'bob', name: 'Bob', consent: 'granted', joinAfter: 10, sentence: 'Send the shipping contract to legal.', keyword: 'contract' },
];

export interface DemoOptions {
  /** Where all state goes; default: a new temporary directory (kept, printed). */
  dataDir?: string;
  /** Configuration source (default process.env); DATA_DIR comes from dataDir. */
  env?: NodeJS.ProcessEnv;
  /** Config values that win over env (the CLI picks free ports here). */
  overrides?: Partial<Record<ConfigKey, unknown>>;
  /** 'auto': WHISPER_MODEL when installed, else the generated test model. */
  model?: 'auto' | 'generated';
  /** Seconds the meeting goes on after the late joiner is in (default 8). */
  talkSeconds?: number;
  /** Longest wait for processing + transcription (default 300 s). */
  processingTimeoutMs?: number;
  out?: (line: string) => void;
  signal?: AbortSignal;
  /** Runs with the stack still up after the summary (the CLI's --keep waits for Ctrl-C here). */
  beforeStop?: (result: DemoResult) => Promise<void>;
}

export interface DemoParticipant {
  identity: string;
  name: string;
  /** From the session record: granted | declined | not-required. */
  consent: string;
  tracks: number;
  /** First recorded sample, seconds after the session's first sample; null when not recorded. */
  startsAt: number | null;
  /** Recorded audio span in seconds; null when not recorded. */
  recordedSeconds: number | null;
}

export interface DemoHit {
  participant: string;
  speaker: string;
  start: number;
  end: number;
  snippet: string;
}

export interface DemoCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DemoResult {
  dataDir: string;
  room: string;
  sessionId: string;
  auditUrl: string;
  consoleUrl: string;
  model: { kind: 'installed' | 'generated'; path: string };
  query: string;
  /** processingSeconds: from everyone leaving to the session being done (sealed, transcoded, transcribed, searchable). */
  session: { status: string; transcriptStatus: string | null; startedAt: string | null; endedAt: string | null; durationSeconds: number | null; processingSeconds: number };
  participants: DemoParticipant[];
  /** The room's consent log, as an auditor reads it (GET /api/v1/consent). */
  consentLog: { participant: string; decision: string; method: string; session: string | null; at: string }[];
  artifacts: { key: string; kind: string; participant: string | null; bytes: number; sha256: string }[];
  hits: DemoHit[];
  checks: DemoCheck[];
  ok: boolean;
  /** The keys the demo used, and the first admin key when this run created the data dir's first admin. */
  keys: { officer: string; auditor: string; admin: string | undefined };
}

interface Joined {
  member: CastMember;
  browser: Browser;
  page: Page;
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const out = opts.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const signal = opts.signal;
  const env = opts.env ?? process.env;
  const dataDir = path.resolve(opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'verbatim-demo-')));
  mkdirSync(dataDir, { recursive: true });

  // Models live where the operator put them (the regular WHISPER_MODELS_DIR), not in a
  // throwaway data dir; without one, the generated test model stands in, and we say so.
  const base = loadConfig({ env });
  const installed = modelLocation({ model: base.WHISPER_MODEL, modelsDir: base.WHISPER_MODELS_DIR });
  const useInstalled = (opts.model ?? 'auto') === 'auto' && existsSync(installed.path);
  const model = useInstalled ? { kind: 'installed' as const, path: installed.path } : { kind: 'generated' as const, path: fixedPhraseModelPath() };
  const config: Config = loadConfig({
    env,
    overrides: {
      LOG_LEVEL: env.LOG_LEVEL ?? 'warn',
      ...opts.overrides,
      DATA_DIR: dataDir,
      // An installed model keeps its name, so a known one is still checked against its published SHA-1.
      ...(useInstalled ? { WHISPER_MODELS_DIR: base.WHISPER_MODELS_DIR } : { WHISPER_MODEL: model.path }),
    },
  });
  const query = useInstalled ? CAST.filter((c) => c.consent === 'granted').map((c) => c.keyword).join(' or ') : `"${TEST_PHRASE}"`;

  out(`Verbatim demo — data dir ${dataDir}`);
  if (useInstalled) out(`  Whisper model: ${model.path} (the transcript is the real speech)`);
  else {
    out(`  Whisper model: none installed at ${installed.path};`);
    out(`  using the generated test model: its transcript is always the fixed phrase "${TEST_PHRASE}", NOT the words spoken.`);
    out(`  The search below therefore looks for that phrase. Install a real model (README, "Whisper model") to search the speech itself.`);
  }

  const audioDir = path.join(dataDir, 'demo-audio');
  mkdirSync(audioDir, { recursive: true });
  const audio = new Map(CAST.map((c) => [c.identity, speak(c.sentence, path.join(audioDir, `${c.identity}.wav`))]));
  const camera = fakeCameraY4m();

  // Every wait below also ends on Ctrl-C; the finally block then closes browsers and the stack.
  const interrupted = new Promise<never>((_resolve, reject) => {
    const fail = () => reject(new VerbatimError('DEMO_FAILED', 'demo interrupted; everything it started has been stopped', { hint: 'Run npm run demo again and let it finish.' }));
    if (signal?.aborted) fail();
    else signal?.addEventListener('abort', fail, { once: true });
  });
  interrupted.catch(() => {});
  const guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, interrupted]);

  const logger = createLogger({ level: config.LOG_LEVEL });
  const stack = await startStack(config, logger, signal ? { signal } : {}).catch((err: unknown) => {
    if (signal?.aborted) throw new VerbatimError('DEMO_FAILED', 'demo interrupted; everything it started has been stopped', { hint: 'Run npm run demo again and let it finish.' });
    throw err;
  });
  const joined: Joined[] = [];
  const browsers: Browser[] = [];
  try {
    out(`  Stack up: meeting server ${stack.urls.sfu}, compliance API ${stack.urls.audit}`);
    const room = `demo-${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}`;
    await sfuAdmin(stack, 'POST', '/rooms', {
      id: room,
      name: 'Verbatim demo meeting',
      flags: RoomFlagsSchema.parse({ record: true, lockRecord: true, consent: 'required', transcribe: true, language: 'en', notifyJoining: true }),
    });
    out(`  Room ${room}: recorded from the first speaker, consent required, transcribed`);

    // Browsers start up front (slow on small machines) so the late joiner's delay is the script's, not Chromium's.
    const launched = new Map<string, Browser>();
    for (const c of CAST) {
      // Ctrl-C is ours to handle: Playwright's handler would exit before the stack is stopped.
      const b = await guard(launchChromium({ video: camera, audio: audio.get(c.identity)!, handleSignals: false }));
      browsers.push(b);
      launched.set(c.identity, b);
    }
    const join = async (c: CastMember): Promise<Joined> => {
      const { joinUrl } = (await sfuAdmin(stack, 'POST', `/rooms/${room}/tokens`, { identity: c.identity, name: c.name })) as { joinUrl: string };
      const browser = launched.get(c.identity)!;
      const context = await browser.newContext();
      const page = await context.newPage();
      // Kept so that a page which does not join can say where it stopped (console, step, signaling).
      const consoleLines: string[] = [];
      page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
      try {
        await page.goto(joinUrl);
        await page.waitForFunction(() => (window as MeetingWindow).verbatim?.state.phase === 'joined', undefined, { timeout: 30_000 });
        // Answer once recording runs, so the decision lands in this session's timeline.
        await page.waitForFunction(() => (window as MeetingWindow).verbatim?.state.recording?.recording === true, undefined, { timeout: 30_000 });
      } catch (err) {
        const where = await page
          .evaluate(() => {
            const v = (window as MeetingWindow).verbatim;
            return JSON.stringify({ phase: v?.state.phase, step: v?.state.step, error: v?.state.error, recording: v?.state.recording, signaling: v?.signaling?.() });
          })
          .catch((e: unknown) => `page state unreadable: ${(e as Error).message}`);
        throw new VerbatimError('DEMO_FAILED', `${c.name}'s page did not join: ${(err as Error).message.split('\n')[0]}; page ${where}; console: ${consoleLines.slice(-20).join(' | ') || '(empty)'}`, {
          hint: 'The page state says which join step it waited in; run npm run demo again, and report it if it repeats.',
        });
      }
      await page.locator('#consent-dialog[open]').waitFor({ timeout: 10_000 });
      await page.click(c.consent === 'granted' ? '#consent-accept' : '#consent-decline');
      // The SFU's own view of the answer, not just the page's.
      await poll(
        async () => {
          const { peers } = (await sfuAdmin(stack, 'GET', `/rooms/${room}/peers`)) as { peers: { id: string; consent: string }[] };
          return peers.find((p) => p.id === c.identity)?.consent === c.consent ? true : undefined;
        },
        10_000,
        signal,
        `${c.name}'s consent answer`,
      );
      await page.waitForFunction((want) => (window as MeetingWindow).verbatim?.state.recording?.recordingYou === want, c.consent === 'granted', { timeout: 10_000 });
      const j = { member: c, browser, page };
      joined.push(j);
      out(`  ${c.name} joined and ${c.consent === 'granted' ? 'consented' : 'declined to be recorded'}: "${c.sentence}"`);
      return j;
    };

    const early = CAST.filter((c) => c.joinAfter === 0);
    await guard(Promise.all(early.map(join)));
    const t0 = Date.now();
    for (const c of CAST.filter((x) => x.joinAfter > 0).sort((a, b) => a.joinAfter - b.joinAfter)) {
      await sleep(t0 + c.joinAfter * 1000 - Date.now(), signal);
      await guard(join(c));
    }
    await sleep((opts.talkSeconds ?? 8) * 1000, signal);

    // The decliner took part (others heard her); only the recording leaves her out.
    const decliner = CAST.find((c) => c.consent === 'declined')!;
    const listener = joined.find((j) => j.member.consent === 'granted')!;
    const heard = await guard(listener.page.evaluate(() => (window as MeetingWindow).verbatim!.inboundStats()));
    const declinerHeardPackets = heard.filter((s) => s.peerId === decliner.identity && s.kind === 'audio').reduce((n, s) => n + s.packetsReceived, 0);

    for (const j of joined) await guard(j.page.click('#leave'));
    for (const b of browsers.splice(0)) await b.close();
    const leftAt = Date.now();
    out(`  Meeting ended after ${((leftAt - t0) / 1000).toFixed(0)} s; processing…`);

    // The room emptied: the SFU ends the session, the recorder seals it and queues the job.
    const sessionId = await poll(async () => (await stack.db.selectFrom('recording_sessions').select('id').where('room_id', '=', room).executeTakeFirst())?.id, 30_000, signal, 'the recording session to be registered');
    // Roles are disjoint: the officer searches and views sessions, the auditor reads the consent log.
    const officerKey = await apiKeyFor(stack, 'compliance_officer');
    const auditorKey = await apiKeyFor(stack, 'auditor');
    const api = async <T>(p: string, key = officerKey): Promise<T> => {
      const res = await fetch(`${stack.urls.audit}/api/v1${p}`, { headers: { authorization: `Bearer ${key}` } });
      const body = (await res.json()) as T & { error?: { code: string; message: string } };
      if (!res.ok) throw new VerbatimError('DEMO_FAILED', `compliance API ${p}: ${res.status} ${body.error?.code ?? ''} ${body.error?.message ?? ''}`, { hint: 'See the log lines above.' });
      return body;
    };
    let lastProgress = -1;
    const details = await poll(
      async () => {
        const s = await api<SessionDetails>(`/sessions/${encodeURIComponent(sessionId)}`);
        if (s.progress !== lastProgress && s.status === 'processing') out(`  processing ${s.progress}%`);
        lastProgress = s.progress;
        if (s.status === 'failed') throw new VerbatimError('DEMO_FAILED', `session ${sessionId} failed: ${s.error?.code ?? ''} ${s.error?.message ?? ''}`, { hint: 'See the log lines above.' });
        return s.status === 'done' ? s : undefined;
      },
      opts.processingTimeoutMs ?? 300_000,
      signal,
      'the session to be processed',
    );
    const processingSeconds = (Date.now() - leftAt) / 1000;

    const search = await api<{ total: number; hits: { participant: string; speaker: string; start: number; end: number; snippet: string }[] }>(
      `/search?${new URLSearchParams({ q: query, session: sessionId, pageSize: '100' })}`,
    );
    const hits: DemoHit[] = search.hits
      .map((h) => ({ participant: h.participant, speaker: h.speaker, start: h.start, end: h.end, snippet: plainSnippet(h.snippet) }))
      .sort((a, b) => a.start - b.start);

    const consent = await api<{ events: { participant: string; decision: string; method: string; session: string | null; at: string }[] }>(
      `/consent?${new URLSearchParams({ room })}`,
      auditorKey,
    );
    const consentLog = consent.events.map((e) => ({ participant: e.participant, decision: e.decision, method: e.method, session: e.session, at: e.at }));
    const manifest = readManifest(sessionDirOf(config.RECORDINGS_DIR, room, sessionId));
    const participants = describeParticipants(manifest, details);
    const checks = verify({ sessionId, participants, hits, details, consentLog, declinerHeardPackets, lateMember: CAST.find((c) => c.joinAfter > 0)! });
    const consoleUrl = `${stack.urls.audit}/console/sessions/${encodeURIComponent(sessionId)}`;
    const result: DemoResult = {
      dataDir,
      room,
      sessionId,
      auditUrl: stack.urls.audit,
      consoleUrl,
      model,
      query,
      session: {
        status: details.status,
        transcriptStatus: details.transcriptStatus,
        startedAt: details.startedAt,
        endedAt: details.endedAt,
        durationSeconds: details.artifacts.find((a) => a.kind === 'composite' && a.key.endsWith('/composite.mp4'))?.durationSeconds ?? null,
        processingSeconds,
      },
      participants,
      consentLog,
      artifacts: details.artifacts.map((a) => ({ key: a.key, kind: a.kind, participant: a.participant, bytes: a.bytes, sha256: a.sha256 })),
      hits,
      checks,
      ok: checks.every((c) => c.ok),
      keys: { officer: officerKey, auditor: auditorKey, admin: stack.firstAdminKey },
    };
    for (const line of summary(result, base)) out(line);
    await opts.beforeStop?.(result);
    return result;
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    await stack.stop();
  }
}

interface SessionDetails {
  session: string;
  status: string;
  startedAt: string | null;
  endedAt: string | null;
  transcriptStatus: string | null;
  progress: number;
  error: { code: string; message: string } | null;
  participants: { participant: string; name: string; consent: string; consentMethod: string | null }[];
  tracks: { track: string; participant: string; kind: string }[];
  artifacts: { key: string; kind: string; participant: string | null; bytes: number; sha256: string; durationSeconds: number | null }[];
}

/** espeak-ng sentence, padded with silence so Chromium's looping leaves pauses between utterances. */
function speak(sentence: string, file: string): string {
  const raw = `${file}.raw.wav`;
  execFileSync('espeak-ng', ['-w', raw, sentence]);
  execFileSync('sox', [raw, '-r', '48000', '-c', '1', file, 'pad', '0.3', '0.9'], { stdio: ['ignore', 'ignore', 'pipe'] });
  rmSync(raw);
  return file;
}

/** Placement on the session clock from the sealed manifest: arrival times of each track's first and last packets. */
function describeParticipants(manifest: SessionManifest, details: SessionDetails): DemoParticipant[] {
  const segs = manifest.tracks.flatMap((t) => t.segments);
  const firstUs = Math.min(...segs.flatMap((s) => (s.firstArrivalUs === null ? [] : [s.firstArrivalUs])));
  return CAST.map((c) => {
    const tracks = manifest.tracks.filter((t) => t.participant === c.identity);
    const own = tracks.flatMap((t) => t.segments).filter((s) => s.firstArrivalUs !== null);
    const audio = tracks.filter((t) => t.kind === 'audio').flatMap((t) => t.segments).filter((s) => s.firstArrivalUs !== null && s.lastArrivalUs !== null);
    const record = details.participants.find((p) => p.participant === c.identity);
    return {
      identity: c.identity,
      name: c.name,
      consent: record?.consent ?? 'absent',
      tracks: tracks.length,
      startsAt: own.length ? (Math.min(...own.map((s) => s.firstArrivalUs!)) - firstUs) / 1e6 : null,
      recordedSeconds: audio.length ? audio.reduce((n, s) => n + (s.lastArrivalUs! - s.firstArrivalUs!), 0) / 1e6 : null,
    };
  });
}

function verify(input: {
  sessionId: string;
  participants: DemoParticipant[];
  hits: DemoHit[];
  details: SessionDetails;
  consentLog: DemoResult['consentLog'];
  declinerHeardPackets: number;
  lateMember: CastMember;
}): DemoCheck[] {
  const { participants, hits, details } = input;
  const checks: DemoCheck[] = [];
  for (const c of CAST) {
    const logged = input.consentLog.filter((e) => e.participant === c.identity).map((e) => `${e.decision} (${e.method})${e.session === input.sessionId ? '' : ` in session ${e.session ?? 'none'}`}`);
    checks.push({
      name: `consent log has ${c.name}'s answer in this session`,
      ok: logged.length === 1 && logged[0] === `${c.consent} (click)`,
      detail: logged.join(', ') || 'nothing logged',
    });
  }
  for (const c of CAST.filter((x) => x.consent === 'declined')) {
    const p = participants.find((x) => x.identity === c.identity)!;
    const artifacts = details.artifacts.filter((a) => a.participant === c.identity).length;
    const found = hits.filter((h) => h.participant === c.identity).length;
    checks.push({
      name: `${c.name} (declined) is not recorded`,
      ok: p.consent === 'declined' && p.tracks === 0 && artifacts === 0 && found === 0,
      detail: `consent ${p.consent}, ${p.tracks} tracks, ${artifacts} artifacts, ${found} hits`,
    });
    checks.push({
      name: `${c.name} (declined) still took part`,
      ok: input.declinerHeardPackets > 0,
      detail: `${input.declinerHeardPackets} of her audio packets reached another participant`,
    });
  }
  const late = participants.find((x) => x.identity === input.lateMember.identity)!;
  checks.push({
    name: `${late.name} joined late`,
    ok: late.startsAt !== null && late.startsAt >= input.lateMember.joinAfter - 0.5,
    detail: `first sample at ${late.startsAt?.toFixed(2) ?? '—'} s on the session clock`,
  });
  const lateHits = hits.filter((h) => h.participant === late.identity);
  if (lateHits.length) {
    checks.push({
      name: `${late.name}'s transcript starts late`,
      ok: Math.min(...lateHits.map((h) => h.start)) >= input.lateMember.joinAfter - 0.5,
      detail: `first hit at ${Math.min(...lateHits.map((h) => h.start)).toFixed(2)} s`,
    });
  }
  for (const c of CAST.filter((x) => x.consent === 'granted')) {
    const n = hits.filter((h) => h.participant === c.identity).length;
    checks.push({ name: `search finds ${c.name}`, ok: n > 0, detail: `${n} hit${n === 1 ? '' : 's'}` });
  }
  checks.push({ name: 'transcript done', ok: details.transcriptStatus === 'done', detail: `transcript status ${details.transcriptStatus ?? '—'}` });
  return checks;
}

/** `base` is the configuration without the demo's overrides: what a later `npm start` uses. */
function summary(r: DemoResult, base: Config): string[] {
  const s = (n: number | null, digits = 1) => (n === null ? '—' : `${n.toFixed(digits)} s`);
  const kib = (n: number) => (n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
  const lines = [
    '',
    `Session ${r.sessionId} (room ${r.room}): ${r.session.status}, transcript ${r.session.transcriptStatus ?? '—'}`,
    `  Meeting ${s(r.session.durationSeconds)} recorded; done ${s(r.session.processingSeconds)} after everyone left`,
    'Participants:',
    ...r.participants.map(
      (p) => `  ${p.name.padEnd(6)} consent ${p.consent.padEnd(12)} ${p.tracks ? `${p.tracks} tracks, from ${s(p.startsAt)}, ${s(p.recordedSeconds)} of audio` : 'not recorded (no tracks)'}`,
    ),
    'Consent log (as an auditor reads it):',
    ...r.consentLog.map((e) => `  ${e.at}  ${(r.participants.find((p) => p.identity === e.participant)?.name ?? e.participant).padEnd(6)} ${e.decision} (${e.method})`),
    'Artifacts:',
    ...r.artifacts.map((a) => `  ${a.key.split('/').slice(3).join('/').padEnd(36)} ${a.kind.padEnd(16)} ${kib(a.bytes).padStart(10)}  sha256 ${a.sha256.slice(0, 16)}…`),
    `Search for ${r.query} through the compliance API: ${r.hits.length} hits${r.model.kind === 'generated' ? ' (generated test model: the text is the fixed phrase, not the speech)' : ''}`,
    ...r.hits.map((h) => `  ${h.speaker.padEnd(6)} ${h.start.toFixed(1).padStart(5)}–${h.end.toFixed(1).padEnd(5)} s  ${h.snippet}`),
    'Checks:',
    ...r.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
    '',
    `Console   : ${r.consoleUrl}`,
    `  sign in with the officer key ${r.keys.officer}`,
    `  (auditor key ${r.keys.auditor}${r.keys.admin ? `, admin key ${r.keys.admin}` : ''}; this demo data dir only)`,
    `Reopen    : DATA_DIR=${r.dataDir} npm start, then http://${base.AUDIT_HOST}:${base.AUDIT_PORT}/console/sessions/${encodeURIComponent(r.sessionId)}`,
    '',
  ];
  return lines;
}

/** Snippets are HTML with <mark>; the terminal gets *marked* words. */
function plainSnippet(html: string): string {
  return html
    .replace(/<mark>/g, '*')
    .replace(/<\/mark>/g, '*')
    .replace(/&(amp|lt|gt|quot|#39);/g, (_m, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[e]!);
}

/** A key for a role: through the API with the first admin key, else (a reused data dir, whose admin key was shown once) directly. */
async function apiKeyFor(stack: RunningStack, role: 'compliance_officer' | 'auditor'): Promise<string> {
  const name = `demo ${role.replace('_', ' ')}`;
  if (stack.firstAdminKey) {
    const res = await fetch(`${stack.urls.audit}/api/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.firstAdminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, role }),
    });
    const body = (await res.json()) as { apiKey?: string; error?: { code: string; message: string } };
    if (!res.ok || !body.apiKey) throw new VerbatimError('DEMO_FAILED', `creating the ${role} key failed: ${res.status} ${body.error?.code ?? ''}`, { hint: 'See the log lines above.' });
    return body.apiKey;
  }
  return (await createUserWithKey(stack.db, { name, role })).apiKey;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new VerbatimError('DEMO_FAILED', 'demo interrupted; everything it started has been stopped', { hint: 'Run npm run demo again and let it finish.' }));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new VerbatimError('DEMO_FAILED', 'demo interrupted; everything it started has been stopped', { hint: 'Run npm run demo again and let it finish.' }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function poll<T>(fn: () => Promise<T | undefined>, timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new VerbatimError('DEMO_FAILED', `timed out after ${timeoutMs / 1000} s waiting for ${what}`, { hint: 'The machine may be overloaded; see the log lines above.' });
    await sleep(500, signal);
  }
}

/** `verbatim demo [--data-dir DIR] [--keep]`. */
export async function runDemoCommand(args: string[]): Promise<number> {
  let dataDir: string | undefined;
  let keep = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--data-dir' && args[i + 1]) dataDir = args[++i];
    else if (a.startsWith('--data-dir=')) dataDir = a.slice('--data-dir='.length);
    else if (a === '--keep') keep = true;
    else {
      process.stderr.write(`unknown demo option "${a}"; usage: verbatim demo [--data-dir DIR] [--keep]\n`);
      return 2;
    }
  }
  if (!inOwnProcessGroup()) return rerunInOwnProcessGroup();
  const controller = new AbortController();
  let stopWaiting: () => void = () => {};
  // `on`, not `once`: a repeated Ctrl-C must not kill us halfway through sealing and stopping.
  const onSignal = () => {
    if (!controller.signal.aborted) process.stderr.write('Stopping the demo…\n');
    controller.abort();
    stopWaiting();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const offParentGone = onParentGone(onSignal);
  // A throwaway stack: free ports unless the operator set them.
  const overrides: Partial<Record<ConfigKey, unknown>> = {};
  for (const k of ['SFU_PORT', 'RECORDER_PORT', 'AUDIT_PORT'] as const) if (process.env[k] === undefined) overrides[k] = 0;
  try {
    const result = await runDemo({
      ...(dataDir ? { dataDir } : {}),
      overrides,
      signal: controller.signal,
      ...(keep
        ? {
            beforeStop: () => {
              process.stdout.write('Serving until Ctrl-C (--keep).\n');
              return new Promise<void>((resolve) => (stopWaiting = resolve));
            },
          }
        : {}),
    });
    return result.ok ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    offParentGone();
  }
}
