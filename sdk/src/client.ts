import type { Address, Hex } from "viem";
import { depositTypedData, type SigningDomain } from "../../shared/signing.ts";
import { EdgeApiError, VerificationError } from "./errors.ts";
import { Http, type RetryOptions } from "./http.ts";
import { checkOpenedResult, PrivatePayloads, type TaskKeyHolder } from "./private.ts";
import { sseJson } from "./sse.ts";
import type {
  Completion,
  CompletionChunk,
  CreateSessionRequest,
  EmbeddingsRequest,
  OffchainCompletionRequest,
  Receipt,
  RouterInfo,
  Session,
  TaskView,
  WorkAnswer,
} from "./types.ts";
import { type TrustAnchor, type VerificationReport, type VerifyOptions, verifyEvidence } from "./verify.ts";

// The client: one object per router and key, its methods grouped by route family. Every answer that carries a
// receipt can be verified (`verify: true` on the client or the call); a verified call throws VerificationError
// instead of returning evidence that does not hold.

export interface EdgeClientOptions extends RetryOptions {
  /** The router's base URL, e.g. https://router.example or http://127.0.0.1:8787. */
  baseUrl: string;
  /** A client API key (static or managed `ek_…`). */
  apiKey?: string;
  /** Per attempt, ms (default 120000). */
  timeoutMs?: number;
  fetch?: typeof fetch;
  /** Verify every answer that carries evidence (default false; a call's own `verify` wins). */
  verify?: boolean;
  /**
   * The router's receipt signer and domain, known out of band. Without it they are read once from
   * GET /api/v1/info (trust on first use) the first time something is verified.
   */
  trust?: { signer: string; domain: SigningDomain };
  /** Accept best-effort answers given without a quorum when verifying. */
  allowNoQuorum?: boolean;
}

export interface CallOptions {
  verify?: boolean;
  signal?: AbortSignal;
}

export interface CompletionOptions extends CallOptions {
  /** 1 (default): `/api/v1/completions`; 2 or 3: the off-chain routes (private payloads, result URNs). */
  version?: 1 | 2 | 3;
  /**
   * With `private: true` (default true): seal the prompt here under a reserved task's key and send only the
   * ciphertext (`/api/v1/sessions/:sid/reservations`, then `…/sealed`; needs `session_id`). `false`: send the prompt
   * to the v2/v3 route, which seals it on the router.
   */
  sealPromptLocally?: boolean;
}

/** A streamed completion: iterate for chunks (`for await`), or `text()` for the rest as one string. */
export interface CompletionStream extends AsyncIterable<CompletionChunk> {
  /** The last chunk (usage, cost, receipt) once the stream ended. */
  readonly final: CompletionChunk | undefined;
  /** The text of every chunk, concatenated. */
  readonly textSoFar: string;
  /** Reads the stream to its end and returns the whole text. */
  text(): Promise<string>;
  /** Just the new text of each chunk. */
  tokens(): AsyncIterable<string>;
}

export class EdgeClient {
  readonly http: Http;
  readonly payloads: PrivatePayloads;
  readonly #opts: EdgeClientOptions;
  #trust: Promise<TrustAnchor> | null = null;

  constructor(opts: EdgeClientOptions) {
    this.#opts = opts;
    this.http = new Http(opts);
    this.payloads = new PrivatePayloads(this.http);
  }

  // ── meta ──────────────────────────────────────────────────────────────────────────────────────────────
  ping = () => this.#get<{ status: string }>("/api/v1/ping", { anonymous: true });
  about = () => this.#get<Record<string, unknown>>("/api/v1/about", { anonymous: true });
  info = () => this.#get<RouterInfo>("/api/v1/info");
  status = () => this.#get<Record<string, number>>("/api/v1/status");

  readonly miners = {
    list: (q: { limit?: number; before?: string } = {}) =>
      this.#get<{ nodes: Record<string, unknown>[]; stats: Record<string, number>; next_before: string | null }>("/api/v1/miners", {
        query: q,
      }),
    ledger: (address: string, q: { limit?: number; before?: number } = {}) =>
      this.#get<{ address: string; stake: number; balance: number; reputation: unknown; entries: Record<string, unknown>[] }>(
        `/api/v1/miners/${address}/ledger`,
        { query: q },
      ),
  };

  // ── sessions and tasks ─────────────────────────────────────────────────────────────────────────────────
  readonly sessions = {
    create: (body: CreateSessionRequest = {}) => this.#post<Session>("/api/v1/sessions", body),
    get: (id: string) => this.#get<Session>(`/api/v1/sessions/${enc(id)}`),
    list: (q: { limit?: number; before?: string } = {}) =>
      this.#get<{ count: number; sessions: Session[]; next_before: string | null }>("/api/v1/sessions", { query: q }),
    deposit: (id: string, body: Record<string, unknown>) => this.#post<Session>(`/api/v1/sessions/${enc(id)}/deposits`, body),
    /**
     * What a chain deposit's payer signs (viem `signTypedData`) to post `{tx_hash, signature}`: Deposit {session, tx}
     * under the router's domain (the pinned trust domain, else GET /api/v1/info's receipt_domain).
     */
    depositTypedData: async (id: string, txHash: Hex) => depositTypedData({ session: id, tx: txHash }, (await this.trustAnchor()).domain),
  };

  readonly tasks = {
    get: (sessionId: string, taskId: string) => this.#get<TaskView>(`/api/v1/tasks/${enc(sessionId)}/${enc(taskId)}`),
    list: (sessionId: string, q: { limit?: number; before?: string } = {}) =>
      this.#get<{ session_id: string; count: number; tasks: TaskView[] }>(`/api/v1/tasks/${enc(sessionId)}`, { query: q }),
    cancel: (sessionId: string, taskId: string) => this.#post<TaskView>(`/api/v1/tasks/${enc(sessionId)}/${enc(taskId)}/cancel`, {}),
  };

  // ── completions ───────────────────────────────────────────────────────────────────────────────────────
  readonly completions = {
    /**
     * One completion, whole. A private v2/v3 result (only its URN in the answer) is fetched as ciphertext and opened
     * here with the task key; `text` is the plaintext.
     */
    create: async (body: OffchainCompletionRequest, opts: CompletionOptions = {}): Promise<Completion> => {
      const sealed = body.private === true && opts.sealPromptLocally !== false;
      const { answer, task } = sealed
        ? await this.#sealedCompletion(body, opts)
        : {
            answer: (
              await this.http.json<Completion>(completionPath(opts.version ?? 1, body.session_id), {
                body: { ...body, stream: false },
                signal: opts.signal,
              })
            ).body,
            task: undefined,
          };
      let text = answer.choices?.[0]?.text ?? "";
      const urn = answer.offchain?.result_urn;
      if (urn && text === "") text = await this.payloads.openResult(answer.session_id, answer.task_id, urn, task);
      if (urn && task) checkOpenedResult(answer, urn, text);
      const done: Completion = { ...answer, text };
      if (this.#verifying(opts)) await this.#check(done.receipt, text, done.request_id);
      return done;
    },
    /**
     * A streamed completion as an async iterator of chunks; verified (when asked) once the stream ends. A private
     * one is sealed here as `create` seals it and answered whole: the stream yields that one answer, its text opened.
     */
    stream: (body: OffchainCompletionRequest, opts: CompletionOptions = {}): CompletionStream =>
      body.private === true && opts.sealPromptLocally !== false
        ? this.#stream("", null, opts, undefined, () => this.completions.create(body, opts))
        : this.#stream(completionPath(opts.version ?? 1, body.session_id), { ...body, stream: true }, opts),
  };

  readonly embeddings = {
    create: (body: EmbeddingsRequest, opts: CallOptions = {}) =>
      this.#verified<{ data: unknown[]; request_id: string; receipt?: Receipt; [k: string]: unknown }>(
        `/api/v1/embeddings${body.session_id ? `/${enc(body.session_id)}` : ""}`,
        body,
        opts,
      ),
  };

  // ── delegate, validate, factcheck ─────────────────────────────────────────────────────────────────────
  readonly work = {
    delegate: (version: 1 | 2 | 3, body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#verified<WorkAnswer>(`/api/v${version}/delegate`, body, opts),
    validate: (version: 1 | 2 | 3, body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#verified<WorkAnswer>(`/api/v${version}/validate`, body, opts),
    factcheck: (body: Record<string, unknown>, opts: CallOptions = {}) => this.#verified<WorkAnswer>("/api/v1/factcheck", body, opts),
  };

  readonly receipts = {
    get: (requestId: string) => this.#get<Receipt>(`/api/v1/receipts/${enc(requestId)}`),
  };

  // ── the OpenAI-compatible gateway (/openai/v1) ─────────────────────────────────────────────────────────
  readonly openai = {
    models: () => this.#get<{ object: "list"; data: { id: string }[] }>("/openai/v1/models"),
    chat: (body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#verifiedText<Record<string, unknown>>("/openai/v1/chat/completions", { ...body, stream: false }, opts, (a) => {
        const c = (a.choices as { message?: { content?: string } }[] | undefined)?.[0];
        return c?.message?.content ?? undefined;
      }),
    chatStream: (body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#stream("/openai/v1/chat/completions", { ...body, stream: true }, opts, (chunk) => {
        const c = (chunk.choices as unknown as { delta?: { content?: string } }[])?.[0];
        return c?.delta?.content ?? "";
      }),
    completions: (body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#verifiedText<Record<string, unknown>>("/openai/v1/completions", { ...body, stream: false }, opts, (a) => {
        return (a.choices as { text?: string }[] | undefined)?.[0]?.text;
      }),
    embeddings: (body: Record<string, unknown>, opts: CallOptions = {}) =>
      this.#verified<Record<string, unknown>>("/openai/v1/embeddings", body, opts),
  };

  // ── agents: A2A and MCP discovery ──────────────────────────────────────────────────────────────────────
  readonly agents = {
    /** The A2A agent card (public). */
    card: () => this.#get<Record<string, unknown>>("/.well-known/agent-card.json", { anonymous: true }),
    /** The discovery document: A2A cards, endpoints and the MCP endpoints (public). */
    discovery: () => this.#get<Record<string, unknown>>("/api/v1/a2a/discovery", { anonymous: true }),
    /** MCP over Streamable HTTP: initialize, then `tools/list`; the tools the router offers. */
    mcpTools: async () => {
      const mcp = await this.#mcpSession();
      return (await mcp.request("tools/list", {})) as { tools: { name: string; description?: string }[] };
    },
  };

  // ── verification ───────────────────────────────────────────────────────────────────────────────────────
  /** Checks an answer's evidence (receipt, miners' signatures, verdict) without throwing; see verify.ts. */
  async verify(answer: { receipt?: Receipt; text?: string }, opts: VerifyOptions = {}): Promise<VerificationReport> {
    return verifyEvidence(answer.receipt, answer.text, await this.trustAnchor(), { allowNoQuorum: this.#opts.allowNoQuorum, ...opts });
  }

  /** The router's signer and domain: the pinned ones, else GET /api/v1/info once. */
  trustAnchor(): Promise<TrustAnchor> {
    if (this.#opts.trust) {
      return Promise.resolve({ signer: this.#opts.trust.signer as Address, domain: this.#opts.trust.domain });
    }
    this.#trust ??= this.info().then((i) => ({ signer: i.receipt_signer as Address, domain: i.receipt_domain as SigningDomain }));
    this.#trust.catch(() => (this.#trust = null));
    return this.#trust;
  }

  // ── internals ─────────────────────────────────────────────────────────────────────────────────────────
  #verifying(opts: CallOptions): boolean {
    return opts.verify ?? this.#opts.verify ?? false;
  }

  async #check(receipt: Receipt | undefined, text: string | undefined, requestId: string | undefined): Promise<void> {
    const report = await this.verify({ receipt, text });
    if (requestId && receipt && receipt.request_id !== requestId) report.problems.push("the receipt is for another request");
    if (report.problems.length) throw new VerificationError(report.problems, requestId);
  }

  async #get<T>(path: string, init: { anonymous?: boolean; query?: Record<string, string | number | undefined> } = {}): Promise<T> {
    return (await this.http.json<T>(path, init)).body;
  }

  async #post<T>(path: string, body: unknown): Promise<T> {
    return (await this.http.json<T>(path, { body })).body;
  }

  async #verified<T extends { receipt?: Receipt; request_id?: string }>(path: string, body: unknown, opts: CallOptions): Promise<T> {
    return this.#verifiedText<T>(path, body, opts, () => undefined);
  }

  async #verifiedText<T extends { receipt?: Receipt; request_id?: string }>(
    path: string,
    body: unknown,
    opts: CallOptions,
    textOf: (answer: T) => string | undefined,
  ): Promise<T> {
    const { body: answer, headers } = await this.http.json<T>(path, { body, signal: opts.signal });
    if (this.#verifying(opts))
      await this.#check(answer.receipt, textOf(answer), answer.request_id ?? headers.get("x-request-id") ?? undefined);
    return answer;
  }

  #stream(
    path: string,
    body: unknown,
    opts: CallOptions,
    textOf: (c: CompletionChunk) => string = (c) => c.choices?.[0]?.text ?? "",
    whole?: () => Promise<Completion>,
  ): CompletionStream {
    const client = this;
    let final: CompletionChunk | undefined;
    let textSoFar = "";
    let started = false;
    async function* chunks(): AsyncGenerator<CompletionChunk> {
      if (started) throw new Error("a completion stream can be read once");
      started = true;
      if (whole) {
        // Sealed and opened (and verified when asked) by create(): one chunk carrying the opened text.
        const answer = await whole();
        final = { ...answer, choices: answer.choices.map((c, i) => (i === 0 ? { ...c, text: answer.text } : c)) };
        textSoFar = answer.text;
        yield final;
        return;
      }
      const res = await client.http.response(path, { body, signal: opts.signal, raw: true });
      const requestId = res.headers.get("x-request-id") ?? undefined;
      if (!(res.headers.get("content-type") ?? "").includes("text/event-stream")) {
        // A private task is never streamed: the router answers it whole (`streaming_disabled`).
        const whole = (await res.json()) as CompletionChunk;
        final = whole;
        textSoFar = textOf(whole);
        yield whole;
      } else {
        for await (const chunk of sseJson<CompletionChunk>(res)) {
          textSoFar += textOf(chunk);
          if (chunk.receipt || chunk.usage) final = chunk;
          yield chunk;
        }
      }
      if (!final)
        throw new EdgeApiError({
          status: res.status,
          code: "invalid_response",
          message: "the stream ended without its final chunk",
          requestId,
        });
      if (client.#verifying(opts)) await client.#check(final.receipt, textSoFar, final.receipt?.request_id ?? requestId);
    }
    const iterable = chunks();
    return {
      [Symbol.asyncIterator]: () => iterable,
      get final() {
        return final;
      },
      get textSoFar() {
        return textSoFar;
      },
      async text() {
        for await (const _ of iterable);
        return textSoFar;
      },
      tokens() {
        return (async function* () {
          for await (const c of iterable) {
            const t = textOf(c);
            if (t) yield t;
          }
        })();
      },
    };
  }

  /**
   * A private completion whose prompt is sealed here: reserve a task id (with its key), seal the prompt spec under
   * it, send the envelope. A reservation the router forgot (its queue restarted) is 409: reserved and sealed again,
   * once.
   */
  async #sealedCompletion(
    body: OffchainCompletionRequest,
    opts: CompletionOptions,
    again = true,
  ): Promise<{ answer: Completion; task: TaskKeyHolder }> {
    const sessionId = body.session_id;
    if (!sessionId) throw new Error("a prompt sealed on the client needs session_id (a private session of your own)");
    const {
      prompt,
      prompt_type,
      prompt_template,
      private: _p,
      payload_policy: _pp,
      result_policy: _rp,
      session_id: _s,
      stream: _st,
      ...params
    } = body as OffchainCompletionRequest & { stream?: boolean };
    const task = await this.payloads.reserve(sessionId, opts.signal);
    const envelope = await this.payloads.seal(sessionId, task, { prompt, prompt_type, prompt_template });
    try {
      const { body: answer } = await this.http.json<Completion>(`/api/v3/completions/${enc(sessionId)}/sealed`, {
        body: { ...params, task_id: task.task_id, reservation: task.reservation, envelope },
        signal: opts.signal,
      });
      return { answer, task };
    } catch (err) {
      if (!again || !(err instanceof EdgeApiError) || err.code !== "conflict") throw err;
      return this.#sealedCompletion(body, opts, false);
    }
  }

  #mcp: Promise<{ request(method: string, params: unknown): Promise<unknown> }> | null = null;

  #mcpSession() {
    this.#mcp ??= (async () => {
      let sessionId: string | undefined;
      let id = 0;
      const request = async (method: string, params: unknown, notify = false) => {
        const res = await this.http.response("/mcp", {
          body: notify ? { jsonrpc: "2.0", method, params } : { jsonrpc: "2.0", id: ++id, method, params },
          headers: { accept: "application/json, text/event-stream", ...(sessionId ? { "mcp-session-id": sessionId } : {}) },
          raw: true,
        });
        sessionId = res.headers.get("mcp-session-id") ?? sessionId;
        if (notify) {
          await res.body?.cancel();
          return undefined;
        }
        const msg = (res.headers.get("content-type") ?? "").includes("text/event-stream")
          ? await firstOf(sseJson<{ result?: unknown; error?: { message: string } }>(res))
          : ((await res.json()) as { result?: unknown; error?: { message: string } });
        if (msg?.error) throw new EdgeApiError({ status: res.status, code: "mcp_error", message: msg.error.message });
        return msg?.result;
      };
      await request("initialize", {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "edge-inference-sdk", version: "0.1.0" },
      });
      await request("notifications/initialized", {}, true);
      return { request: (m: string, p: unknown) => request(m, p) };
    })();
    this.#mcp.catch(() => (this.#mcp = null));
    return this.#mcp;
  }
}

function completionPath(version: 1 | 2 | 3, sessionId: string | undefined): string {
  return `/api/v${version}/completions${sessionId ? `/${enc(sessionId)}` : ""}`;
}

const enc = encodeURIComponent;

async function firstOf<T>(it: AsyncIterable<T>): Promise<T | undefined> {
  for await (const v of it) return v;
  return undefined;
}
