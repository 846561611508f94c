// The portal's calls: the router's own REST routes with the signed-in key as a bearer (kept in sessionStorage, i.e.
// this tab only), and an SSE reader over fetch (EventSource cannot send an Authorization header).

const KEY = "portal.api_key";

export const getKey = (): string | null => sessionStorage.getItem(KEY);
export const setKey = (key: string | null): void => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY));

export class ApiFailure extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(res: Response): Promise<ApiFailure> {
  const body = (await res.json().catch(() => null)) as { error?: { code?: string; message?: string } } | null;
  return new ApiFailure(res.status, body?.error?.code ?? "error", body?.error?.message ?? res.statusText);
}

const headers = (key = getKey(), json = false): Record<string, string> => ({
  ...(key ? { authorization: `Bearer ${key}` } : {}),
  ...(json ? { "content-type": "application/json" } : {}),
});

// biome-ignore lint/suspicious/noExplicitAny: JSON from the router, read by each page by its documented shape.
export async function get<T = any>(path: string, key?: string): Promise<T> {
  const res = await fetch(path, { headers: headers(key) });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

// biome-ignore lint/suspicious/noExplicitAny: as above.
export async function post<T = any>(path: string, body: unknown): Promise<T> {
  const res = await fetch(path, { method: "POST", headers: headers(undefined, true), body: JSON.stringify(body) });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

export interface SseEvent {
  event: string;
  data: string;
}

/** POSTs (or GETs, body undefined) and yields the answer's Server-Sent Events until it ends or `signal` aborts. */
export async function* sse(path: string, body: unknown, signal: AbortSignal): AsyncGenerator<SseEvent> {
  const init: RequestInit =
    body === undefined
      ? { headers: headers(), signal }
      : { method: "POST", headers: headers(undefined, true), body: JSON.stringify(body), signal };
  const res = await fetch(path, init);
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const ev: SseEvent = { event: "message", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) ev.event = line.slice(6).trim();
        else if (line.startsWith("data:")) ev.data += (ev.data ? "\n" : "") + line.slice(5).trimStart();
      }
      if (ev.data) yield ev;
    }
  }
}
