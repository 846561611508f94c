// A few DOM helpers: elements are built with text nodes only (never innerHTML), so nothing a miner, a tenant or the
// router returns can become markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | ((e: Event) => void)>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces an element's children. */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

export const short = (s: string | null | undefined, n = 10): string =>
  !s ? "—" : s.length <= n + 4 ? s : `${s.slice(0, n)}…${s.slice(-4)}`;

export const fmt = (n: number | null | undefined, digits = 0): string =>
  n === null || n === undefined || Number.isNaN(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits });

export const time = (ms: number | null | undefined): string => (ms ? new Date(ms).toLocaleTimeString("en-GB", { hour12: false }) : "—");

/** A link inside the portal (hash routes). */
export const link = (route: string, text: Child, label?: string) => h("a", { href: `#/${route}`, "aria-label": label }, text);

/** A table with a caption, header cells and rows (each row a list of cells). */
export function table(caption: string, heads: string[], rows: Child[][], attrs: Attrs = {}): HTMLTableElement {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...heads.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c) => h("td", {}, c))))),
  );
}

/** Label/value tiles (figures of a page). */
export function tiles(items: [string, Child, string?][]): HTMLElement {
  return h(
    "dl",
    { class: "tiles" },
    ...items.map(([k, v, id]) => h("div", { class: "tile" }, h("dt", {}, k), h("dd", { id: id ?? null }, v))),
  );
}

export const badge = (text: string) => h("span", { class: `badge b-${text.replace(/[^a-z_]/g, "")}` }, text);
