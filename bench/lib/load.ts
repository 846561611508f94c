// The one client loop every target of the router benchmark is measured with (our router, the Portkey gateway,
// the mock directly): the same fetch, the same JSON body handling, the same clocks.

export interface Target {
  name: string;
  url: string;
  headers: Record<string, string>;
  /** The request body for request number `i`; null: a GET. */
  body: (i: number) => unknown;
}

export interface Answer {
  status: number;
  ms: number;
  // biome-ignore lint/suspicious/noExplicitAny: the parsed JSON of three different servers, read field by field
  body: any;
}

/**
 * The `Accept-Encoding` of every request. "identity" by default: Miniflare's entry worker compresses JSON and SSE
 * answers as Cloudflare's edge (FL) would, but inside the router's own workerd process, on the same core as the
 * router; in production that compression happens on Cloudflare's front line, not in the Worker. The peers never
 * compress, so this changes only our figures (`bench:router --gzip` measures with gzip).
 */
let acceptEncoding = "identity";
export function setAcceptEncoding(value: string): void {
  acceptEncoding = value;
}

/** One non-streamed request: the time until its whole body has been read and parsed. */
export async function call(t: Target, i: number): Promise<Answer> {
  const t0 = performance.now();
  const sent = t.body(i);
  const res = await fetch(
    t.url,
    sent === null
      ? { headers: { "accept-encoding": acceptEncoding, ...t.headers } }
      : {
          method: "POST",
          headers: { "content-type": "application/json", "accept-encoding": acceptEncoding, ...t.headers },
          body: JSON.stringify(sent),
        },
  );
  const text = await res.text();
  const ms = performance.now() - t0;
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: res.status, ms, body };
}

/** `n` requests one after another (after `warm` unmeasured ones). */
export async function sequential(t: Target, n: number, warm = 20): Promise<Answer[]> {
  for (let i = 0; i < warm; i++) await call(t, -1 - i);
  const out: Answer[] = [];
  for (let i = 0; i < n; i++) out.push(await call(t, i));
  return out;
}

export interface LoadResult {
  ok: number;
  failed: number;
  seconds: number;
  perSecond: number;
  latencies: number[];
  firstFailure?: string;
}

/** A failed fetch, with its cause (undici's "fetch failed" says nothing without it). */
function failure(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause ? `${String(err)}: ${cause.code ?? ""} ${cause.message ?? ""}` : String(err);
}

/** `clients` closed-loop clients for `seconds`: each sends its next request when the last one answered. */
export async function closedLoop(t: Target, clients: number, seconds: number): Promise<LoadResult> {
  let ok = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  const latencies: number[] = [];
  const until = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; performance.now() < until; i++) {
        const a = await call(t, c * 1_000_000 + i).catch((err: unknown) => ({ status: 0, ms: 0, body: failure(err) }));
        if (a.status === 200) {
          ok++;
          latencies.push(a.ms);
        } else {
          failed++;
          firstFailure ??= `${a.status} ${JSON.stringify(a.body).slice(0, 300)}`;
        }
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  return { ok, failed, seconds: elapsed, perSecond: ok / elapsed, latencies, firstFailure };
}

/** One streamed request: the time to the first chunk carrying text, and to the end of the stream. */
export async function streamed(t: Target, i: number, textMark: string): Promise<{ ttft: number; total: number; raw: string }> {
  const t0 = performance.now();
  const res = await fetch(t.url, {
    method: "POST",
    headers: { "content-type": "application/json", "accept-encoding": acceptEncoding, ...t.headers },
    body: JSON.stringify(t.body(i)),
  });
  if (res.status !== 200) throw new Error(`${t.name}: streamed request answered ${res.status}: ${await res.text()}`);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let ttft = -1;
  let raw = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    raw += value;
    if (ttft < 0 && raw.includes(textMark)) ttft = performance.now() - t0;
  }
  return { ttft, total: performance.now() - t0, raw };
}

export const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
export const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
export const fx = (x: number, d = 2): string => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
