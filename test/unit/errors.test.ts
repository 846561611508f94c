import { afterEach, describe, expect, it } from "vitest";
import { api, complete, createSession, errorOf, getSession, MinerSet, openSocket, uniq } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("error responses: {request_id, error: {code, message, details}} with request_id = X-Request-ID", () => {
  it("unknown session → 404 session_not_found", async () => {
    const res = await complete(uniq("nosuch"), { prompt: "hello" });
    expect(res.status).toBe(404);
    const err = await errorOf(res);
    expect(err.error.code).toBe("session_not_found");
    expect(err.error.message).toBeTruthy();

    const res2 = await api("GET", `/sessions/${uniq("nosuch")}`);
    expect(res2.status).toBe(404);
    expect((await errorOf(res2)).error.code).toBe("session_not_found");

    const res3 = await api("GET", `/tasks/${uniq("nosuch")}`);
    expect(res3.status).toBe(404);
    expect((await errorOf(res3)).error.code).toBe("session_not_found");
  });

  it("unknown task → 404 task_not_found", async () => {
    const sid = await createSession({ model: uniq("model") });
    const res = await api("GET", `/tasks/${sid}/12345`);
    expect(res.status).toBe(404);
    expect((await errorOf(res)).error.code).toBe("task_not_found");
  });

  it("deposit too small for the task → 402 deposit_exhausted, nothing reserved or queued", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model] });
    const sid = await createSession({ model, deposit: 10 });
    await miner.join(sid);
    const res = await complete(sid, { prompt: "hello", max_tokens: 64 });
    expect(res.status).toBe(402);
    const err = await errorOf(res);
    expect(err.error.code).toBe("deposit_exhausted");
    expect(err.error.details).toMatchObject({ deposit: 10, used: 0, reserved: 0, required: 5 + 64 });
    const s = await getSession(sid);
    expect(s.usage).toMatchObject({ used: 0, reserved: 0, available: 10, tasks_total: 0 });
    expect(miner.assignsFor(sid)).toEqual([]);
  });

  it("a deposit used up by earlier tasks → 402 deposit_exhausted", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], usage: () => ({ prompt_tokens: 5, completion_tokens: 16 }) });
    // Room for one task's reservation (5 + 16 + slack), not for a second once 21 tokens are charged.
    const sid = await createSession({ model, deposit: 40 });
    await miner.join(sid);
    expect((await complete(sid, { prompt: "hello", max_tokens: 16 })).status).toBe(200);
    expect((await getSession(sid)).usage.used).toBe(21);
    const res = await complete(sid, { prompt: "hello", max_tokens: 16 });
    expect(res.status).toBe(402);
    expect((await errorOf(res)).error.code).toBe("deposit_exhausted");
  });

  it("no miner for the session's model → 503 no_miner_available", async () => {
    const model = uniq("model");
    // A miner is online, but for another model.
    await miners.start({ models: [uniq("other-model")] });
    const sid = await createSession({ model });
    const res = await complete(sid, { prompt: "anyone?" });
    expect(res.status).toBe(503);
    const err = await errorOf(res);
    expect(err.error.code).toBe("no_miner_available");
    expect(err.error.details).toEqual({ model });
  });

  it("invalid body → 400 invalid_request with field details", async () => {
    const sid = await createSession({ model: uniq("model") });
    const res = await complete(sid, { prompt: "", max_tokens: 0, temperature: 5 });
    expect(res.status).toBe(400);
    const err = await errorOf(res);
    expect(err.error.code).toBe("invalid_request");
    const details = err.error.details as { path: string; message: string }[];
    expect(Array.isArray(details)).toBe(true);
    const paths = details.map((d) => d.path);
    expect(paths).toEqual(expect.arrayContaining(["prompt", "max_tokens", "temperature"]));
    for (const d of details) expect(d.message).toBeTruthy();

    const notJson = await api("POST", `/completions/${sid}`, undefined, { raw: "{not json" });
    expect(notJson.status).toBe(400);
    expect((await errorOf(notJson)).error.code).toBe("invalid_request");

    const badSession = await api("POST", "/sessions", { model: "m" });
    expect(badSession.status).toBe(400);
    const e2 = await errorOf(badSession);
    expect((e2.error.details as { path: string }[]).map((d) => d.path)).toContain("deposit");
  });

  it("a second session with the same id → 409 session_exists", async () => {
    const sid = await createSession({ model: uniq("model") });
    const res = await api("POST", "/sessions", { session_id: sid, deposit: 1 });
    expect(res.status).toBe(409);
    expect((await errorOf(res)).error.code).toBe("session_exists");
  });

  it("model different from the session's → 400 invalid_request", async () => {
    const model = uniq("model");
    await miners.start({ models: [model] });
    const sid = await createSession({ model });
    const res = await complete(sid, { prompt: "hi", model: "some/other" });
    expect(res.status).toBe(400);
    const err = await errorOf(res);
    expect(err.error.code).toBe("invalid_request");
    expect(err.error.details).toEqual([{ path: "model", message: `expected ${model}` }]);
  });

  it("missing or unknown API key → 401 unauthorized", async () => {
    const sid = await createSession({ model: uniq("model") });
    for (const key of [null, "not-a-key"]) {
      const res = await complete(sid, { prompt: "hi" }, { key });
      expect(res.status).toBe(401);
      expect((await errorOf(res)).error.code).toBe("unauthorized");
    }
    const malformed = await api("GET", "/status", undefined, { key: null, headers: { Authorization: "Basic abc" } });
    expect(malformed.status).toBe(401);
    expect((await errorOf(malformed)).error.code).toBe("unauthorized");
    // Public routes need no key.
    const ping = await api("GET", "/ping", undefined, { key: null });
    expect(ping.status).toBe(200);
    expect(ping.headers.get("X-Request-ID")).toBeTruthy();
  });

  it("unknown route → 404 not_found in the same shape", async () => {
    const res = await api("GET", "/no/such/route");
    expect(res.status).toBe(404);
    expect((await errorOf(res)).error.code).toBe("not_found");
  });

  it("a client-sent X-Request-ID is not adopted: the router makes its own and echoes the client's apart", async () => {
    const res = await complete(uniq("nosuch"), { prompt: "hi" }, { headers: { "X-Request-ID": "client-chosen-id-42" } });
    const err = await errorOf(res);
    expect(err.request_id).not.toBe("client-chosen-id-42");
    expect(err.request_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(res.headers.get("X-Client-Request-ID")).toBe("client-chosen-id-42");
    // Bounded and sanitised: an id with other characters is not echoed at all, a long one is cut to 128.
    const odd = await complete(uniq("nosuch"), { prompt: "hi" }, { headers: { "X-Request-ID": "a b<script>" } });
    expect(odd.headers.get("X-Client-Request-ID")).toBeNull();
    const long = await complete(uniq("nosuch"), { prompt: "hi" }, { headers: { "X-Request-ID": "x".repeat(1000) } });
    expect(long.headers.get("X-Client-Request-ID")).toBe("x".repeat(128));
  });

  it("a miner socket with a bad token is refused with 401; a non-upgrade request with 400", async () => {
    const sid = await createSession({ model: uniq("model") });
    for (const path of ["/miners/connect", `/sessions/${sid}/connect`]) {
      const bad = await openSocket(path, "forged.token");
      expect(bad.ws).toBeNull();
      expect(bad.res.status).toBe(401);
      expect((await errorOf(bad.res)).error.code).toBe("unauthorized");
      const none = await openSocket(path, null);
      expect(none.res.status).toBe(401);
      await none.res.arrayBuffer();
    }
    const plain = await api("GET", "/miners/connect", undefined, { key: null });
    expect(plain.status).toBe(400);
    expect((await errorOf(plain)).error.code).toBe("invalid_request");
  });
});
