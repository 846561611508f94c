import { EdgeApiError } from "./errors.ts";

// Server-sent events as the router writes them: `data: <json>` lines, blank-line separated, ending with
// `data: [DONE]`. An error after the stream began arrives as an error body in a data line; it is thrown.

/** The JSON `data:` payloads of an SSE response, in order, until `[DONE]`. */
export async function* sseJson<T>(res: Response): AsyncGenerator<T> {
  if (!res.body) return;
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut = buf.search(/\r?\n\r?\n/);
      while (cut >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data === "[DONE]") return;
        if (data) yield parse<T>(data, res);
        cut = buf.search(/\r?\n\r?\n/);
      }
    }
  } finally {
    reader.releaseLock();
    await res.body.cancel().catch(() => {});
  }
}

function parse<T>(data: string, res: Response): T {
  let obj: unknown;
  try {
    obj = JSON.parse(data);
  } catch {
    throw new EdgeApiError({ status: res.status, code: "invalid_response", message: `stream chunk is not JSON: ${data.slice(0, 200)}` });
  }
  const o = obj as { error?: { code?: string; message?: string; details?: unknown }; request_id?: string };
  if (o && typeof o === "object" && o.error && typeof o.error === "object") {
    throw new EdgeApiError({
      status: res.status,
      code: o.error.code ?? "stream_error",
      message: o.error.message ?? "the stream ended with an error",
      requestId: o.request_id ?? res.headers.get("x-request-id") ?? undefined,
      details: o.error.details,
    });
  }
  return obj as T;
}
