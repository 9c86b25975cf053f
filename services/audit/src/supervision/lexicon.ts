import { sql, type Kysely } from 'kysely';
import type { Database } from '../../../../db/schema.ts';
import { VerbatimError } from '../../../lib/errors.ts';

/**
 * The lexicon of a supervision policy: one entry per line of a small syntax, matched with
 * Postgres full-text search so "guarantee" also finds "guaranteed":
 *
 *   guarantee                 a word (stemmed, english)
 *   text me   /  "text me"    a phrase: these words in this order (stop words kept)
 *   call NEAR/5 cell          both within 5 words of each other, either order (each side a word or "phrase")
 *   NOT "no guarantee"        an exclusion: a segment that says it raises no lexicon hit
 *
 * Entries are parsed here (errors name the entry and the character), then compiled by Postgres
 * itself into tsqueries of the verbatim_lexicon configuration (english stemming, no stop words:
 * migration 0016) plus an english prefilter that the transcript GIN index can answer.
 */

export type LexiconEntry =
  | { kind: 'phrase'; text: string; source: string }
  | { kind: 'near'; a: string; b: string; within: number; source: string }
  | { kind: 'exclude'; text: string; source: string };

export interface CompiledRule {
  /** The entry as written (the hit's rule is `lexicon:<source>`). */
  source: string;
  /** tsquery (verbatim_lexicon) text that decides a hit. */
  query: string;
}

export interface CompiledLexicon {
  rules: CompiledRule[];
  /** OR of every rule as english lexemes: a superset the GIN index on transcript_segments.tsv finds fast; null = no rules. */
  prefilter: string | null;
  /** OR of the exclusions (verbatim_lexicon); null = none. */
  exclusion: string | null;
}

export const MAX_NEAR = 20;
const MAX_ENTRY = 200;

function lexiconError(entry: number, position: number, message: string, source: string): VerbatimError {
  return new VerbatimError('LEXICON_INVALID', `lexicon entry ${entry + 1}, character ${position + 1}: ${message}`, {
    hint: 'Entries are a word, a phrase ("text me"), A NEAR/n B, or NOT <phrase>. Letters, digits, apostrophes and hyphens only.',
    details: { field: 'lexicon', entry, position, source },
  });
}

/** Parses one entry; throws LEXICON_INVALID with the entry's index and the character position. */
export function parseLexiconEntry(source: string, index: number): LexiconEntry {
  if (source.length > MAX_ENTRY) throw lexiconError(index, MAX_ENTRY, `longer than ${MAX_ENTRY} characters`, source);
  let pos = 0;
  const skip = () => {
    while (pos < source.length && source[pos] === ' ') pos++;
  };
  /** A word run or a "quoted phrase", from pos. */
  const part = (what: string): string => {
    skip();
    if (pos >= source.length) throw lexiconError(index, pos, `expected ${what}`, source);
    const start = pos;
    if (source[pos] === '"') {
      const close = source.indexOf('"', pos + 1);
      if (close < 0) throw lexiconError(index, pos, 'unclosed quote', source);
      const inner = source.slice(pos + 1, close);
      checkChars(inner, pos + 1);
      if (!inner.trim()) throw lexiconError(index, pos, 'empty phrase', source);
      pos = close + 1;
      return inner.trim();
    }
    while (pos < source.length && !/^ NEAR\//.test(source.slice(pos)) && source[pos] !== '"') pos++;
    if (source[pos] === '"') throw lexiconError(index, pos, 'a quote inside an unquoted phrase', source);
    const words = source.slice(start, pos);
    checkChars(words, start);
    if (!words.trim()) throw lexiconError(index, start, `expected ${what}`, source);
    return words.trim();
  };
  const checkChars = (s: string, offset: number) => {
    const bad = /[^\p{L}\p{N}' -]/u.exec(s);
    if (bad) throw lexiconError(index, offset + bad.index, `character ${JSON.stringify(bad[0])} is not allowed`, source);
  };
  skip();
  if (pos >= source.length) throw lexiconError(index, 0, 'empty entry', source);
  if (source.startsWith('NOT ', pos)) {
    pos += 4;
    const text = part('a word or phrase after NOT');
    skip();
    if (pos < source.length) throw lexiconError(index, pos, 'unexpected text after the excluded phrase', source);
    return { kind: 'exclude', text, source };
  }
  const a = part('a word or phrase');
  skip();
  if (pos >= source.length) return { kind: 'phrase', text: a, source };
  if (!source.startsWith('NEAR/', pos)) throw lexiconError(index, pos, 'expected NEAR/<n> or the end of the entry', source);
  pos += 5;
  const num = /^\d+/.exec(source.slice(pos));
  if (!num) throw lexiconError(index, pos, 'NEAR/ needs a distance in words (1-20)', source);
  const within = Number(num[0]);
  if (within < 1 || within > MAX_NEAR) throw lexiconError(index, pos, `NEAR distance ${within} is outside 1-${MAX_NEAR}`, source);
  pos += num[0].length;
  if (source[pos] !== ' ') throw lexiconError(index, pos, 'expected a space after NEAR/<n>', source);
  const b = part('a word or phrase after NEAR');
  skip();
  if (pos < source.length) throw lexiconError(index, pos, 'unexpected text after the NEAR phrase', source);
  return { kind: 'near', a, b, within, source };
}

export function parseLexicon(entries: readonly string[]): LexiconEntry[] {
  return entries.map((e, i) => parseLexiconEntry(e, i));
}

/**
 * Compiles parsed entries with the database's own parser and stemmer (so the policy means
 * what the transcripts' index means). An entry that is only stop words (nothing the index
 * could find) is refused with its position.
 */
export async function compileLexicon(db: Kysely<Database>, entries: readonly LexiconEntry[]): Promise<CompiledLexicon> {
  const rules: CompiledRule[] = [];
  const prefilters: string[] = [];
  const exclusions: string[] = [];
  for (const [i, e] of entries.entries()) {
    if (e.kind === 'near') {
      const r = await sql<{ q: string; pre: string }>`
        select (select string_agg('(' || (tsquery_phrase(a, b, d) || tsquery_phrase(b, a, d))::text || ')', ' | ') from generate_series(1, ${e.within}::int) d) as q,
               plainto_tsquery('english', ${`${e.a} ${e.b}`})::text as pre
        from (select phraseto_tsquery('verbatim_lexicon', ${e.a}) as a, phraseto_tsquery('verbatim_lexicon', ${e.b}) as b) x`.execute(db);
      const row = r.rows[0]!;
      if (!row.pre || !row.q) throw lexiconError(i, 0, 'this entry has only stop words: the index cannot find it', e.source);
      rules.push({ source: e.source, query: row.q });
      prefilters.push(row.pre);
    } else {
      const r = await sql<{ q: string; pre: string }>`select phraseto_tsquery('verbatim_lexicon', ${e.text})::text as q, plainto_tsquery('english', ${e.text})::text as pre`.execute(db);
      const row = r.rows[0]!;
      if (!row.q) throw lexiconError(i, 0, 'this entry has no words', e.source);
      if (e.kind === 'exclude') exclusions.push(row.q);
      else {
        if (!row.pre) throw lexiconError(i, 0, 'this entry has only stop words: the index cannot find it', e.source);
        rules.push({ source: e.source, query: row.q });
        prefilters.push(row.pre);
      }
    }
  }
  const or = (qs: string[]) => (qs.length === 0 ? null : qs.map((q) => `( ${q} )`).join(' | '));
  return { rules, prefilter: or(prefilters), exclusion: or(exclusions) };
}
