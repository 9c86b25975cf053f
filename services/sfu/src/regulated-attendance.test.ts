import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../../db/database.ts';
import { createLogger } from '../../lib/logger.ts';
import { RegulatedAttendance } from './regulated-attendance.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'verbatim-regulated-list-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the SFU\'s regulated list', () => {
  it('names and group members are regulated; a change shows after maxAge; a database outage keeps the last list, and with none read yet a join fails', async () => {
    const db = await openDatabase({ pgliteDir: path.join(dir, 'db') });
    const logger = createLogger({ level: 'silent' });
    await db.insertInto('regulated_subjects').values([{ kind: 'identity', value: 'rita', reason: 'r', added_by: 'user:a' }, { kind: 'group', value: 'desk', reason: 'r', added_by: 'user:a' }]).execute();
    await db.insertInto('identity_groups').values([{ name: 'desk' }, { name: 'lunch' }]).execute();
    await db.insertInto('identity_group_members').values([{ group_name: 'desk', participant_id: 'sam' }, { group_name: 'lunch', participant_id: 'otto' }]).execute();
    const list = new RegulatedAttendance(db, logger, 200);
    expect(await Promise.all(['rita', 'sam', 'otto', 'desk'].map((i) => list.isRegulated(i)))).toEqual([true, true, false, false]);
    await db.insertInto('regulated_subjects').values({ kind: 'group', value: 'lunch', reason: 'r', added_by: 'user:a' }).execute();
    expect(await list.isRegulated('otto')).toBe(false); // the list read moments ago
    await new Promise((r) => setTimeout(r, 250));
    expect(await list.isRegulated('otto')).toBe(true);
    const never = new RegulatedAttendance(db, logger, 200);
    await db.destroy();
    await new Promise((r) => setTimeout(r, 250));
    expect(await list.isRegulated('rita')).toBe(true);
    expect(await list.isRegulated('nobody')).toBe(false);
    await expect(never.isRegulated('rita')).rejects.toMatchObject({ code: 'DATABASE_UNAVAILABLE' });
  });
});
