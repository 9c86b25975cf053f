import { PGlite } from '@electric-sql/pglite';
const db = await PGlite.create('memory://');
const r = await db.query(`select ts_headline('english', 'The quick brown <b>fox</b> jumps over the lazy dog. Foxes are quick.', websearch_to_tsquery('english', $1), $2) as h, websearch_to_tsquery('english', 'the') as e`, ['quick fox', 'StartSel=\uE000, StopSel=\uE001, MaxWords=35, MinWords=15, MaxFragments=3, FragmentDelimiter=" … "']);
console.log(JSON.stringify(r.rows).replace(/[\uE000\uE001]/g, (c) => c === "\uE000" ? "[[" : "]]"));
