import { VerbatimError } from '../../lib/errors.ts';

/** Output of the compliance CLIs: a value as JSON with --json, else its text. */
export function cliPrinter(json: boolean | undefined, out: (s: string) => void): (v: unknown, text: string) => void {
  return (v, text) => out(json ? `${JSON.stringify(v, null, 2)}\n` : text);
}

/** A VerbatimError as the CLIs report it (exit status 1): `{error}` with --json, else code, message and fix. Anything else is rethrown. */
export function reportCliError(e: unknown, json: boolean | undefined, out: (s: string) => void, err: (s: string) => void): number {
  if (!(e instanceof VerbatimError)) throw e;
  if (json) out(`${JSON.stringify({ error: e.toJSON() }, null, 2)}\n`);
  else err(`error ${e.code}: ${e.message}${e.hint ? `\nfix: ${e.hint}` : ''}\n`);
  return 1;
}
