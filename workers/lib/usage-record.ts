import type { Context } from "hono";
import { keyRegistry } from "../../durable-objects/stubs.ts";
import type { AppEnv, Metered } from "../env.ts";
import type { ClientKey } from "./keys.ts";
import { outerContextOf } from "./rest-call.ts";
import { meterUsage } from "./usage-batch.ts";

// What one request did, from its first middleware (middleware/request-log.ts) to the end of its answer: its
// key, its budget reservation, and the work it reports (`c.set("metered", …)`, workers/env.ts). At the end the
// key's usage is recorded (UsageMeter, per owner, in batches: lib/usage-batch.ts) and its budget settled
// (KeyRegistry), both in waitUntil so that metering never delays an answer.
//
// An in-process request (an MCP tool call's or the gateway's REST request, lib/rest-call.ts) is part of its
// outer request: its work is credited to the outer request, which is the one counted and recorded (its own
// `metered`, when its route sets one, wins). The budget is settled by whichever of the two reserved it.

export interface RequestState {
  start: number;
  /** The outer request of an in-process request. */
  outer: Context<AppEnv> | undefined;
  key?: ClientKey;
  /** The model the request names (read by the key gate), for failures that never reached `metered`. */
  model?: string;
  /** Whether this request reserved budget (its settle charges the work below). */
  budgetGated: boolean;
  reservation: number | null;
  /** Work of in-process requests, credited here. */
  inner: Metered[];
}

const states = new WeakMap<Context<AppEnv>, RequestState>();

/** The state of `c`'s request, made on first use. */
export function requestState(c: Context<AppEnv>): RequestState {
  let st = states.get(c);
  if (!st) {
    st = { start: Date.now(), outer: outerContextOf(c.req.raw), budgetGated: false, reservation: null, inner: [] };
    states.set(c, st);
  }
  return st;
}

/** The work a request did: what its route reported, else what its in-process requests did. */
export function meteredOf(c: Context<AppEnv>): Metered[] {
  const own = c.get("metered");
  return own ? [own] : requestState(c).inner;
}

export const tokensOf = (m: Metered) => (m.usage.prompt_tokens ?? 0) + (m.usage.completion_tokens ?? 0);

/** Routes that do inference work (and answer with `metered`): the ones budgets and usage rows are about. */
export const WORK_ROUTE =
  /^\/(api\/v[123]\/(completions|delegate|validate|factcheck|fact-check|embeddings)|v1\/completions|openai\/v1\/(chat\/completions|completions|embeddings))(\/|$)/;

export const isWork = (c: Context<AppEnv>) => c.req.method === "POST" && WORK_ROUTE.test(c.req.path);

function waitUntil(c: Context<AppEnv>, p: Promise<unknown>): void {
  const logged = p.catch((err) => console.error(`request ${c.get("requestId")}: metering failed`, err));
  try {
    c.executionCtx.waitUntil(logged);
  } catch {
    // No execution context (a test calling the app directly): the promise still runs.
  }
}

/** One usage event per model of the work (a request that did none: one event under the model it named). */
function usageEvents(c: Context<AppEnv>, st: RequestState, key: ClientKey, status: number, latency: number) {
  const work = meteredOf(c);
  const failed = status >= 400;
  const base = { key_id: key.id, at: st.start, latency_ms: latency, request: true };
  if (work.length === 0) {
    return [{ ...base, model: st.model ?? "(none)", prompt_tokens: 0, completion_tokens: 0, cost: 0, failed }];
  }
  return work.map((m, i) => ({
    ...base,
    model: m.model,
    prompt_tokens: m.usage.prompt_tokens ?? 0,
    completion_tokens: m.usage.completion_tokens ?? 0,
    cost: m.cost?.total ?? 0,
    failed: failed || m.failed === true,
    // A batch of in-process requests is still one request.
    request: i === 0,
  }));
}

/**
 * Ends a request: credits an in-process request's work to its outer request; for a client's request, records
 * its usage (work routes, or any request that reported work) and settles its budget reservation.
 */
export function finishRequest(c: Context<AppEnv>, status: number, latency: number): void {
  const st = requestState(c);
  const key = st.key;
  const work = meteredOf(c);
  if (st.outer) requestState(st.outer).inner.push(...work);
  if (!key) return;
  if (st.budgetGated) {
    const charged = work.reduce((n, m) => n + tokensOf(m), 0);
    waitUntil(c, keyRegistry(c.env).settle(key.id, st.reservation, charged));
  }
  if (st.outer || (work.length === 0 && !isWork(c))) return;
  waitUntil(c, meterUsage(c.env, key.owner, usageEvents(c, st, key, status, latency)));
}
