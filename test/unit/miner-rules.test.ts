import { describe, expect, it } from "vitest";
import type { SessionJoin } from "../../durable-objects/miner-credentials.ts";
import type { MinerSocket } from "../../durable-objects/miner-sockets.ts";
import { joinDecision } from "../../durable-objects/session-queue/channels.ts";
import { resultWriteFault } from "../../durable-objects/session-queue/commit-checks.ts";
import { contextFailure, minPromptTokens, promptReadBytes, refusedByEveryone } from "../../durable-objects/session-queue/context.ts";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import type { OpenTask } from "../../durable-objects/session-queue/task.ts";
import type { ModelContext } from "../../shared/api.ts";
import { PoolMinerMessage } from "../../shared/protocol.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { issueMinerToken, tokenTtlSeconds, verifyMinerToken } from "../../workers/lib/miner-token.ts";

// The pure rules of issue 11's miner side: token format and lifetime, who may join a session, heartbeat bounds,
// the context-length bound and the miners' refusals, and the one off-chain result per replica.

const A = "0x00000000000000000000000000000000000000aa";
const B = "0x00000000000000000000000000000000000000bb";
const C = "0x00000000000000000000000000000000000000cc";
const CLAIMS = { address: A, capacity: 2, models: ["m"], device: "cpu", epoch: 3 };

describe("miner tokens", () => {
  it("verify only as exactly body.signature, unexpired, with every claim", async () => {
    const { token, expires_at } = await issueMinerToken("s".repeat(32), CLAIMS, 60, 1_000);
    expect(expires_at).toBe(61_000);
    expect(await verifyMinerToken("s".repeat(32), token, 2_000)).toEqual(CLAIMS);
    expect(await verifyMinerToken("s".repeat(32), token, 61_000)).toBeNull(); // expired
    expect(await verifyMinerToken("t".repeat(32), token, 2_000)).toBeNull(); // another secret
    for (const bad of [`${token}.x`, `${token}.`, `x.${token}`, `${token}=`, token.replace(".", "..")]) {
      expect(await verifyMinerToken("s".repeat(32), bad, 2_000)).toBeNull();
    }
  });

  it("live MINER_TOKEN_TTL_S seconds, one hour when unset or out of range", () => {
    expect(tokenTtlSeconds({ MINER_TOKEN_TTL_S: "20" })).toBe(20);
    for (const v of ["", "0", "-5", "1.5", "86401", "soon"]) expect(tokenTtlSeconds({ MINER_TOKEN_TTL_S: v })).toBe(3600);
  });
});

describe("joining a session", () => {
  const config = (over: Partial<SessionConfig> = {}) =>
    ({ id: "s", mode: "ephemeral", dedicated_miners: [], max_miners: 2, ...over }) as SessionConfig;
  const pool = (over: Partial<SessionJoin> = {}): SessionJoin => ({ current: true, assigned: true, members: [A], contexts: null, ...over });
  const idle = (...addresses: string[]) => addresses.map((address) => ({ address, holdsWork: false }));

  it("refuses a revoked token, and a miner the pool did not assign unless it holds work here or is dedicated", () => {
    expect(joinDecision(config(), A, pool({ current: false }), [], false)).toMatchObject({ refuse: { code: "unauthorized" } });
    expect(joinDecision(config(), B, pool({ assigned: false }), [], false)).toMatchObject({ refuse: { code: "forbidden" } });
    expect(joinDecision(config(), B, pool({ assigned: false }), [], true)).toEqual({ evict: [] });
    expect(joinDecision(config({ mode: "dedicated", dedicated_miners: [B] }), B, pool({ assigned: false }), [], false)).toEqual({
      evict: [],
    });
  });

  it("holds max_miners, making room only by closing idle miners the pool no longer assigns", () => {
    const full = pool({ members: [A, B, C] });
    expect(joinDecision(config(), A, full, idle(B), false)).toEqual({ evict: [] });
    expect(joinDecision(config(), C, full, idle(A, B), false)).toMatchObject({ refuse: { code: "forbidden" } });
    // B was moved elsewhere by the pool but is still connected: the newly assigned C takes its place.
    expect(joinDecision(config(), C, pool({ members: [A, C] }), idle(A, B), false)).toEqual({ evict: [B] });
    // …unless B still works on a task here.
    expect(joinDecision(config(), C, pool({ members: [A, C] }), [...idle(A), { address: B, holdsWork: true }], false)).toMatchObject({
      refuse: { code: "forbidden" },
    });
    // A reconnect of a connected miner does not count itself.
    expect(joinDecision(config(), A, full, idle(A, B), false)).toEqual({ evict: [] });
  });
});

describe("heartbeats", () => {
  it("are bounded: absurd figures fail the schema, the agent's real ones pass", () => {
    const ok = { type: "heartbeat", inflight: 3, cpu_usage: 87.5, memory_mb: 2048, tokens_per_s: 120 };
    expect(PoolMinerMessage.safeParse(ok).success).toBe(true);
    for (const bad of [{ memory_mb: 1e308 }, { cpu_usage: 100.1 }, { inflight: 1e6 }, { tokens_per_s: 1e308 }, { memory_mb: Number.NaN }]) {
      expect(PoolMinerMessage.safeParse({ ...ok, ...bad }).success, JSON.stringify(bad)).toBe(false);
    }
  });
});

describe("context length", () => {
  const req = (prompt: string, over: Partial<SubmitRequest> = {}, max_tokens = 16) =>
    ({ input: { prompt, prompt_type: 1 }, params: { max_tokens }, stream: false, owner: "o", ...over }) as SubmitRequest;
  const gpt2: ModelContext = { model: "m", positions: 512, max_token_bytes: 13 };

  it("counts the bytes the model reads, templates included, without building the string", () => {
    expect(promptReadBytes({ prompt: "héllo", prompt_type: 1 })).toBe(6);
    expect(promptReadBytes({ prompt: "ab", prompt_type: 0, prompt_template: "<{prompt}|{prompt}>" })).toBe(7);
    expect(promptReadBytes({ prompt: "x".repeat(1000), prompt_type: 0, prompt_template: "summary only" })).toBe(12);
    expect(minPromptTokens(1300, 13)).toBe(100);
    expect(minPromptTokens(1301, 13)).toBe(101);
    expect(minPromptTokens(0, 13)).toBe(1);
    expect(minPromptTokens(1e6, undefined)).toBe(1);
  });

  it("refuses only what fits no serving miner, naming the limit; a miner that declared nothing may fit anything", () => {
    // 497 tokens at least (6,461 bytes / 13) + 16 > 512; 6,448 bytes → 496 + 16 = 512 fits.
    const tooLong = contextFailure(req("x".repeat(6_461)), "m", [gpt2]);
    expect(tooLong).toMatchObject({ code: "context_length_exceeded", details: { limit: 512, min_prompt_tokens: 497, max_tokens: 16 } });
    expect(contextFailure(req("x".repeat(6_448)), "m", [gpt2])).toBeNull();
    expect(contextFailure(req("hi", {}, 600), "m", [gpt2])).toMatchObject({ code: "context_length_exceeded" });
    expect(contextFailure(req("x".repeat(24_000)), "m", [gpt2, { model: "m", positions: 4096, max_token_bytes: 13 }])).toBeNull();
    expect(contextFailure(req("x".repeat(24_000)), "m", [gpt2, null])).toBeNull();
    expect(contextFailure(req("x".repeat(24_000)), "m", [])).toBeNull();
    // Off-chain: the router's count of what the model reads, since the task carries no prompt.
    expect(contextFailure(req("", { prompt_read_bytes: 480 * 1024 }), "m", [gpt2])).toMatchObject({
      details: { prompt_bytes: 480 * 1024 },
    });
    // A grammar bounds its own completion: only one token of it is certain.
    const constrained = req("x".repeat(6_461), { params: { max_tokens: 600, constraint: { segments: [{ literal: "a" }] } } as never });
    expect(contextFailure(constrained, "m", [gpt2])).toBeNull();
  });

  it("fails a task on the miners' refusals only once every serving miner refused it", () => {
    const task = { assign: { model: "m" } } as OpenTask;
    const socket = (address: string) => ({ claims: { address, contexts: [gpt2] } }) as unknown as MinerSocket;
    const serving = [socket(A), socket(B)];
    expect(refusedByEveryone(task, A, serving)).toBeNull(); // one liar fails nothing: B has not refused
    expect(refusedByEveryone(task, A, serving)).toBeNull(); // nor does it by saying so twice
    expect(refusedByEveryone(task, B, serving)).toMatchObject({ code: "context_length_exceeded", details: { limit: 512 } });
    expect(refusedByEveryone({ assign: { model: "m" } } as OpenTask, A, [])).toBeNull();
  });
});

describe("off-chain result writes", () => {
  const payload = { encrypted: false, result_policy: "offchain", inline_limit: 1 } as const;
  it("one per replica, by its holder, on payload tasks only", () => {
    expect(resultWriteFault("1", undefined, payload, "aa")).toMatchObject({ code: "forbidden" });
    expect(resultWriteFault("1", {}, null, "aa")).toMatchObject({ code: "forbidden", message: expect.stringMatching(/inline/) });
    expect(resultWriteFault("1", {}, payload, "aa")).toBeNull();
    // Other bytes after a write: refused. The same bytes again (a retry after a failed R2 put): allowed.
    expect(resultWriteFault("1", { result_claimed: "aa" }, payload, "bb")).toMatchObject({ code: "conflict" });
    expect(resultWriteFault("1", { result_claimed: "aa" }, payload, "aa")).toBeNull();
  });
});
