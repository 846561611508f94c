import { afterEach, describe, expect, it } from "vitest";
import { complete, createSession, getTask, MinerSet, readSSE, sleep, uniq } from "./helpers.ts";

const miners = new MinerSet();
afterEach(() => miners.closeAll());

describe("streaming completions (stream: true)", () => {
  it("forwards the miner's tokens as SSE chunks that add up to the committed text, then finish_reason and [DONE]", async () => {
    const model = uniq("model");
    const text = "Once upon a time, a tiny model streamed its tokens.";
    const pieces = ["Once", " upon", " a time,", " a tiny", " model", " streamed", " its", " tokens."];
    expect(pieces.join("")).toBe(text);
    const miner = await miners.start({
      models: [model],
      text: () => text,
      chunks: () => pieces,
      delayMs: 5,
      usage: () => ({ prompt_tokens: 3, completion_tokens: 8 }),
    });
    const sid = await createSession({ model });
    await miner.join(sid);

    const res = await complete(sid, { prompt: "tell me a story", stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/text\/event-stream/);
    expect(res.headers.get("X-Request-ID")).toBeTruthy();
    const data = await readSSE(res);

    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    // One chunk per token message as it arrived (not one lump at the end), then the finishing chunk.
    expect(chunks.slice(0, -1).map((c) => c.choices[0].text)).toEqual(pieces);
    for (const c of chunks) {
      expect(c.object).toBe("text_completion");
      expect(c.session_id).toBe(sid);
      expect(c.choices).toHaveLength(1);
    }
    const taskId = chunks[0].task_id as string;
    expect(chunks.every((c) => c.task_id === taskId)).toBe(true);
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(text);
    // Only the last chunk finishes, and it carries usage.
    const last = chunks.at(-1);
    expect(last.choices[0].text).toBe("");
    expect(last.choices[0].finish_reason).toBe("stop");
    expect(last.usage).toEqual({ prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 });
    expect(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    // The miner was asked to stream and really streamed token messages.
    expect(miner.assignsFor(sid)[0].stream).toBe(true);
    expect((miner.sent.get(sid) ?? []).filter((m) => m.type === "token")).toHaveLength(pieces.length);

    const task = await getTask(sid, taskId);
    expect(task.status).toBe("closed");
    expect(task.stream).toBe(true);
    expect(task.result?.text).toBe(text);
  });

  it("when the streaming miner drops mid-stream, the replacement continues after the text already sent (no repeats)", async () => {
    const model = uniq("model");
    const text = "alpha beta gamma delta epsilon";
    const pieces = ["alpha", " beta", " gamma", " delta", " epsilon"];
    const first = await miners.start({ models: [model], behaviour: "manual" });
    const sid = await createSession({ model, ack_timeout: 10, task_timeout: 30 });
    await first.join(sid);
    const res = await complete(sid, { prompt: "greek", stream: true });
    expect(res.status).toBe(200);
    const a = await first.nextAssign(sid);
    expect(a.stream).toBe(true);
    first.ack(sid, a.task_id);
    first.tokens(sid, a.task_id, pieces.slice(0, 2));
    await sleep(50);
    first.leave(sid);
    // Deterministic decoding: the replacement produces the same text and streams it from the start.
    const second = await miners.start({ models: [model], text: () => text, chunks: () => pieces, delayMs: 2 });
    await second.join(sid);
    const data = await readSSE(res);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(text);
    // The first miner's two pieces went out live; the replacement's stream picked up right after them.
    expect(chunks.slice(0, -1).map((c) => c.choices[0].text)).toEqual(pieces);
    expect(chunks.at(-1).choices[0].finish_reason).toBe("stop");
    const task = await getTask(sid, a.task_id);
    expect(task.result?.miner).toBe(second.address);
    expect(task.replicas.find((r) => r.miner === first.address)?.state).toBe("disconnected");
  });

  it("ends the stream with an error event then [DONE] when the task fails", async () => {
    const model = uniq("model");
    const miner = await miners.start({ models: [model], behaviour: "never_ack" });
    const sid = await createSession({ model, ack_timeout: 5 });
    await miner.join(sid);
    const res = await complete(sid, { prompt: "never answered", stream: true, timeout: 0.5 });
    expect(res.status).toBe(200);
    const data = await readSSE(res);
    expect(data.at(-1)).toBe("[DONE]");
    const err = JSON.parse(data.at(-2)!);
    expect(err.error.code).toBe("timeout");
    expect(err.request_id).toBe(res.headers.get("X-Request-ID"));
    const task = await getTask(sid, err.error.details.task_id);
    expect(task.status).toBe("failed");
  });
});
