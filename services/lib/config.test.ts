import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configTable, loadConfig } from './config.ts';
import type { VerbatimError } from './errors.ts';

describe('config', () => {
  it('has named defaults for everything', () => {
    const cfg = loadConfig({ env: {} });
    expect(cfg.SFU_PORT).toBe(8080);
    expect(cfg.SFU_SESSION_TIMEOUT_MS).toBe(30_000);
    expect(cfg.DATABASE_URL).toBeUndefined();
    expect(path.isAbsolute(cfg.DATA_DIR)).toBe(true);
    expect(cfg.SFU_WORKERS).toBeGreaterThanOrEqual(1);
  });

  it('RECORDER_RX: native when its binary exists, node when it does not, and native without a binary is refused', () => {
    const missing = path.join(os.tmpdir(), 'no-such-recorder-rx');
    expect(loadConfig({ env: { RECORDER_RX_BIN: missing } }).RECORDER_RX).toBe('node');
    expect(loadConfig({ env: { RECORDER_RX_BIN: process.execPath } }).RECORDER_RX).toBe('native');
    expect(loadConfig({ env: { RECORDER_RX_BIN: process.execPath, RECORDER_RX: 'node' } }).RECORDER_RX).toBe('node');
    expect(() => loadConfig({ env: { RECORDER_RX_BIN: missing, RECORDER_RX: 'native' } })).toThrow(/RECORDER_RX=native/);
  });

  it('coerces env strings and names the bad key on invalid values', () => {
    expect(loadConfig({ env: { SFU_PORT: '9000', SFU_WORKERS: '3' } }).SFU_PORT).toBe(9000);
    const err = (() => {
      try {
        loadConfig({ env: { SFU_PORT: 'eighty', LOG_LEVEL: 'loud' } });
      } catch (e) {
        return e as VerbatimError;
      }
      throw new Error('expected a config error');
    })();
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('SFU_PORT');
    expect(err.message).toContain('LOG_LEVEL');
    expect(err.hint).toContain('README');
  });

  it('checks cross-field rules and secret length', () => {
    expect(() => loadConfig({ env: { SFU_RTC_MIN_PORT: '50000', SFU_RTC_MAX_PORT: '40000' } })).toThrow(/SFU_RTC_MIN_PORT/);
    expect(() => loadConfig({ env: { SFU_API_SECRET: 'short' } })).toThrow(/SFU_API_SECRET/);
  });

  it('validates the OIDC settings at start-up: needed companions, the role map, https off loopback', () => {
    const oidc = { OIDC_ISSUER_URL: 'https://idp.example.com/realms/acme', OIDC_CLIENT_ID: 'verbatim', OIDC_ROLE_MAP: 'verbatim-admins=admin,compliance=compliance_officer' };
    expect(loadConfig({ env: oidc })).toMatchObject({ ...oidc, OIDC_GROUPS_CLAIM: 'groups', OIDC_SCOPES: 'openid profile email' });
    expect(() => loadConfig({ env: { OIDC_ISSUER_URL: oidc.OIDC_ISSUER_URL } })).toThrow(/OIDC_CLIENT_ID: needed.*OIDC_ROLE_MAP: needed/);
    expect(() => loadConfig({ env: { ...oidc, OIDC_ROLE_MAP: 'audit=officer' } })).toThrow(/OIDC_ROLE_MAP=.*unknown role officer/);
    expect(() => loadConfig({ env: { ...oidc, OIDC_ISSUER_URL: 'http://idp.example.com' } })).toThrow(/must be https/);
    expect(loadConfig({ env: { ...oidc, OIDC_ISSUER_URL: 'http://127.0.0.1:9000' } }).OIDC_ISSUER_URL).toBe('http://127.0.0.1:9000');
    expect(() => loadConfig({ env: { ...oidc, OIDC_CLIENT_SECRET: 's', OIDC_CLIENT_SECRET_FILE: '/x' } })).toThrow(/either it or OIDC_CLIENT_SECRET/);
    expect(() => loadConfig({ env: { ...oidc, OIDC_SCOPES: 'profile' } })).toThrow(/must include openid/);
  });

  it('reads a JSON file, env wins, unknown keys are rejected', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-cfg-'));
    const file = path.join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ SFU_PORT: 7000, SFU_HOST: '0.0.0.0' }));
    const cfg = loadConfig({ env: { VERBATIM_CONFIG: file, SFU_PORT: '7001' } });
    expect(cfg.SFU_PORT).toBe(7001);
    expect(cfg.SFU_HOST).toBe('0.0.0.0');
    writeFileSync(file, JSON.stringify({ SFU_PROT: 7000 }));
    expect(() => loadConfig({ env: { VERBATIM_CONFIG: file } })).toThrow(/SFU_PROT/);
  });

  it('the README configuration table is current (npm run docs:config)', () => {
    expect(configTable()).toMatch(/\| `DATABASE_URL` \| — \|/);
    expect(readFileSync('README.md', 'utf8')).toContain(configTable());
  });
});
