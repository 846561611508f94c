import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import app from "../../workers/index.ts";
import { API_KEY, env, errorOf, ORIGIN } from "./helpers.ts";

describe("session resolution", () => {
  it("answers 400 session_required when neither path, body nor a configured default names a session", async () => {
    const ctx = createExecutionContext();
    const res = await app.fetch(
      new Request(`${ORIGIN}/api/v1/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ prompt: "hello" }),
      }),
      { ...env, DEFAULT_SESSION_ID: "" },
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(400);
    const err = await errorOf(res);
    expect(err.error.code).toBe("session_required");
  });
});
