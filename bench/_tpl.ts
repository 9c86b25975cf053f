import { ensureTemplates } from './lib/udp-blast.ts';
console.log(await ensureTemplates());
