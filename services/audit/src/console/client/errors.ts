/// <reference lib="dom" />
import { ApiError } from './api.ts';
import { h } from './dom.ts';

let retry: () => void = () => location.reload();
/** What the Retry button of a network error does (the app re-renders the page). */
export function setRetry(fn: () => void): void {
  retry = fn;
}

/** An error as the user should read it: what happened, and what to do. */
export function errorBox(e: unknown, title?: string): HTMLElement {
  if (e instanceof ApiError) {
    const heading =
      title ??
      (e.network
        ? 'Cannot reach the server'
        : e.status === 403
          ? 'Not allowed for your role'
          : e.status === 404
            ? 'Not found'
            : e.status === 429
              ? 'Too many attempts'
              : e.status >= 500
                ? 'The server failed'
                : 'Request refused');
    return h(
      'div',
      { class: `error ${e.network ? 'network' : `http-${e.status}`}`, role: 'alert', 'data-code': e.code },
      h('strong', {}, heading),
      h('p', {}, e.message, ' ', h('code', {}, e.code)),
      e.hint ? h('p', { class: 'hint' }, e.hint) : null,
      e.network ? h('button', { type: 'button', onclick: () => retry() }, 'Retry') : null,
    );
  }
  return h('div', { class: 'error', role: 'alert' }, h('strong', {}, title ?? 'Something went wrong'), h('p', {}, String((e as Error)?.message ?? e)));
}

