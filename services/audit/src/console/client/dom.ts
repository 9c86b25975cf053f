/// <reference lib="dom" />

/** A tiny element builder: no framework, no innerHTML of data. */
export type Child = Node | string | number | null | undefined | false;
type Handler = (ev: Event) => void | Promise<void>;
type AttrValue = string | number | boolean | null | undefined | Handler;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, AttrValue> = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (typeof v === 'function') listen(el, k.replace(/^on/, '').toLowerCase(), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

/**
 * addEventListener for handlers that may be async: a rejected handler is rethrown as an
 * uncaught error (window.onerror sees it), as a synchronous throw would be, not dropped.
 */
export function listen(el: EventTarget, type: string, handler: Handler): void {
  el.addEventListener(type, (ev) => {
    const result = handler(ev);
    if (result instanceof Promise)
      result.catch((err: unknown) =>
        setTimeout(() => {
          throw err;
        }),
      );
  });
}

export function append(el: Node, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/**
 * The API's snippets are HTML with the transcript text escaped and matches in
 * <mark>…</mark>. Rebuilt as text and <mark> nodes, so nothing else in them can
 * become markup even if the server escaped badly.
 */
export function snippetNodes(html: string): Node[] {
  const out: Node[] = [];
  const parts = html.split(/(<mark>|<\/mark>)/);
  let inMark = false;
  for (const p of parts) {
    if (p === '<mark>') inMark = true;
    else if (p === '</mark>') inMark = false;
    else if (p) out.push(inMark ? h('mark', {}, unescapeHtml(p)) : document.createTextNode(unescapeHtml(p)));
  }
  return out;
}

function unescapeHtml(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39);/g, (_m, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[e]!);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** Seconds → m:ss.s or h:mm:ss. */
export function formatOffset(seconds: number): string {
  const s = Math.max(0, seconds);
  const hrs = Math.floor(s / 3600);
  const min = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const ss = sec.toFixed(1).padStart(4, '0');
  return hrs > 0 ? `${hrs}:${String(min).padStart(2, '0')}:${ss}` : `${min}:${ss}`;
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, ' UTC').replace(/Z$/, ' UTC');
}

/** A labelled form field: <label for> + control, keyboard- and screen-reader-friendly. */
export function field(label: string, control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, help?: string): HTMLElement {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  const helpId = help ? `${id}-help` : undefined;
  if (helpId) control.setAttribute('aria-describedby', helpId);
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, help ? h('small', { id: helpId, class: 'help' }, help) : null);
}

/** el.append that skips null/false children (conditional content). */
export function add(el: Node, ...children: (Child | Child[])[]): void {
  append(el, children);
}

/** Replaces el's content. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  clear(el);
  append(el, children);
}

/**
 * Copies each column's heading onto its cells (data-label) so that narrow screens can
 * show every row as a stacked card (app.css) instead of a table wider than the phone.
 */
export function stackable(table: HTMLTableElement): HTMLTableElement {
  const heads = [...table.querySelectorAll('thead th')].map((th) => th.textContent ?? '');
  table.classList.add('stack');
  for (const row of table.querySelectorAll('tbody tr')) {
    [...row.children].forEach((td, i) => {
      if (heads[i] && !td.hasAttribute('colspan')) td.setAttribute('data-label', heads[i]);
    });
  }
  return table;
}
