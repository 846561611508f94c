import { randomBytes, randomInt } from "node:crypto";
import type { Hex } from "viem";
import type { AssignMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import { commitmentHash, precommitTypedData, resultHash, type SigningDomain } from "../../shared/signing.ts";
import type { TaskView } from "../../shared/views.ts";
import type { Logger } from "./log.ts";
import type { PrecommitSigner, TaskSink } from "./task-runner.ts";

// TEST ONLY. The `copy` cheat (dishonest.ts): a free-rider that runs no model. It acks, then polls every route
// a miner or an API key can reach for another replica's output or commitment — the task, the session's task
// list, the result objects they name — with the API key in MINER_TEST_COPY_API_KEY (tests give it the session
// owner's: the worst case). Text it finds, it precommits (its own commitment over that text) and commits; a
// commitment without text, it precommits verbatim (reuse) and commits the nearest text it has; nothing by
// shortly before its deadline, it commits a guess (on a verified task with a made-up token id). Its `dishonest` events say which, so tests count copies.

const POLL_MS = 50;
/** How long before its commit deadline the copier stops waiting and answers with what it has. */
const GIVE_UP_BEFORE_MS = 500;

export interface CopyContext {
  routerUrl: string;
  /** The API key it reads with (MINER_TEST_COPY_API_KEY); without one only the miner's own routes are tried. */
  apiKey: string | undefined;
  account: PrecommitSigner;
  domain: () => SigningDomain;
  log: Logger;
}

/** What the copier reads of a task view (any field may be missing or sealed). */
type View = Partial<Pick<TaskView, "task_id" | "result" | "results" | "replicas">>;

interface Found {
  text?: string;
  /** Another replica's precommitted value (or result hash) when no text showed. */
  commitment?: Hex;
  from?: string;
  route?: string;
}

/** Acked already (TestRunner): copy, precommit and commit one task. */
export async function copyTask(ctx: CopyContext, sink: TaskSink, assign: AssignMessage, signal: AbortSignal): Promise<void> {
  const own = ctx.account.address.toLowerCase();
  const found: Found = {};
  const giveUpAt = assign.commit_deadline - GIVE_UP_BEFORE_MS;
  while (!found.text && Date.now() < giveUpAt && !signal.aborted) {
    await look(ctx, sink.sessionId, assign.task_id, own, found);
    if (!found.text) await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (signal.aborted) return;
  const text = found.text ?? `guess ${randomBytes(4).toString("hex")}`;
  const how = found.text ? "copied" : found.commitment ? "reused a commitment" : "found nothing, guessed";
  const fields = {
    session_id: sink.sessionId,
    task_id: assign.task_id,
    mode: "copy",
    copied: !!found.text,
    from: found.from ?? null,
    route: found.route ?? null,
  };
  ctx.log.event("dishonest", `task ${sink.sessionId}/${assign.task_id}: ${how} (test-only dishonest mode)`, fields, "warn");
  const hash =
    found.text || !found.commitment
      ? commitmentHash({ session: sink.sessionId, task: assign.task_id, miner: ctx.account.address, result: resultHash(text) })
      : found.commitment;
  const signature = await ctx.account.signTypedData(
    precommitTypedData({ session: sink.sessionId, task: assign.task_id, miner: ctx.account.address, hash }, ctx.domain()),
  );
  const commit: Extract<SessionMinerMessage, { type: "commit" }> = {
    type: "commit",
    task_id: assign.task_id,
    text,
    finish_reason: "length",
    usage: { prompt_tokens: 1, completion_tokens: 1 },
    inference_ms: 1,
    // A verified task wants token ids: one made-up id, so validators (not the router's count check) judge it.
    ...(assign.params.verify ? { token_ids: [randomInt(256)] } : {}),
  };
  sink.deliver({ type: "precommit", task_id: assign.task_id, hash, signature });
  sink.deliver(commit);
}

/** One round over the routes: the task, the session's task list, the result objects they name. */
async function look(ctx: CopyContext, sid: string, tid: string, own: string, found: Found): Promise<void> {
  const base = `${ctx.routerUrl}/api/v1/tasks/${encodeURIComponent(sid)}`;
  const task = await get<View>(ctx, `${base}/${encodeURIComponent(tid)}`);
  const list = await get<{ tasks?: View[] }>(ctx, `${base}?limit=50`);
  const views = [task, ...(list?.tasks ?? []).filter((t) => t?.task_id === tid)];
  for (const [i, view] of views.entries()) {
    if (!view) continue;
    const seen = textIn(view, own);
    if (seen.text) return void Object.assign(found, seen, { route: i === 0 ? "GET /api/v1/tasks/:sid/:tid" : "GET /api/v1/tasks/:sid" });
    for (const r of view.replicas ?? []) {
      if (r.miner === own) continue;
      found.commitment ??= (r.commitment ?? r.hash ?? undefined) as Hex | undefined;
      if (r.result_urn && !found.text) {
        const body = await getText(ctx, `${ctx.routerUrl}/api/v3/offchain/result/${encodeURIComponent(r.result_urn)}?decrypt=true`);
        if (body !== null) Object.assign(found, { text: body, from: r.miner, route: "GET /api/v3/offchain/result/:urn" });
      }
    }
  }
}

/** Another replica's text in a task view: its chosen result, or any committed replica's. */
function textIn(view: View, own: string): Found {
  if (typeof view.result?.text === "string" && view.result.miner !== own) return { text: view.result.text, from: view.result.miner };
  const miners = view.results?.miners ?? [];
  const data = view.results?.data ?? [];
  const i = miners.findIndex((m, j) => m !== own && typeof data[j] === "string" && data[j] !== "");
  return i >= 0 ? { text: data[i], from: miners[i] } : {};
}

async function get<T>(ctx: CopyContext, url: string): Promise<T | null> {
  const text = await getText(ctx, url);
  try {
    return text === null ? null : (JSON.parse(text) as T);
  } catch {
    return null;
  }
}

async function getText(ctx: CopyContext, url: string): Promise<string | null> {
  if (!ctx.apiKey) return null;
  const res = await fetch(url, { headers: { authorization: `Bearer ${ctx.apiKey}` } }).catch(() => null);
  if (!res?.ok) return null;
  return res.text();
}
