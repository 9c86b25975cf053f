import { readFileSync, writeFileSync } from 'node:fs';
import { configTable } from '../services/lib/config.ts';

/** Regenerates the README configuration table from the config spec (npm run docs:config). */
const start = '<!-- config-table:start -->';
const end = '<!-- config-table:end -->';
const readme = readFileSync('README.md', 'utf8');
const a = readme.indexOf(start);
const b = readme.indexOf(end);
if (a < 0 || b < a) throw new Error('README.md lacks the config-table markers');
writeFileSync('README.md', `${readme.slice(0, a + start.length)}\n${configTable()}\n${readme.slice(b)}`);
