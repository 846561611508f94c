// `npm run bench`: figures from one run of the real network (wrangler dev + miner-agent processes) and of
// the miner engine against a bare onnxruntime-node decode loop. Prints medians and ratios; asserts nothing.
import { api, type Miner, MODEL_CACHE, type Router, startMiner, startRouter, until as waitUntil } from "../test/helpers/network.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const N_LATENCY = Number(args.get("latency-n") ?? 300);
const THROUGHPUT_S = Number(args.get("throughput-s") ?? 10);
const CLIENTS = Number(args.get("clients") ?? 32);
const MINERS = Number(args.get("miners") ?? 3);
const MINER_CONCURRENCY = Number(args.get("miner-concurrency") ?? 8);
const N_STREAM = Number(args.get("stream-n") ?? 100);
const N_REDUNDANCY = Number(args.get("redundancy-n") ?? 60);
const ENGINE_TOKENS = Number(args.get("engine-tokens") ?? 128);
const ENGINE_RUNS = Number(args.get("engine-runs") ?? 7);
const OFFCHAIN_N = Number(args.get("offchain-n") ?? 15);
const OFFCHAIN_BYTES = Number(args.get("offchain-bytes") ?? 1024 * 1024);
const only = args.get("only");

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const median = (xs: number[]) => pct(xs, 50);
const f = (x: number, d = 2) => x.toFixed(d);
const rows: [string, string][] = [];
const report = (name: string, value: string) => {
  rows.push([name, value]);
  console.log(`  ${name.padEnd(58)} ${value}`);
};

async function networkBench(): Promise<void> {
  const router = await startRouter();
  const miners: Miner[] = [];
  try {
    for (let i = 0; i < MINERS; i++) miners.push(await startMiner(router.url, { name: `bench-${i}`, concurrency: MINER_CONCURRENCY }));
    await Promise.all(miners.map((m) => m.waitFor("ready")));
    // Warm up: default session creation, miners joining, JIT on both sides.
    for (let i = 0; i < 50; i++) await api(router, "/api/v1/completions", { body: { prompt: "warm up", max_tokens: 1 } });

    console.log(`\nrouter latency: ${N_LATENCY} sequential completions, max_tokens 1`);
    const e2e: number[] = [];
    const overhead: number[] = [];
    const inference: number[] = [];
    for (let i = 0; i < N_LATENCY; i++) {
      const t0 = performance.now();
      const res = await api(router, "/api/v1/completions", { body: { prompt: `latency probe ${i % 7}`, max_tokens: 1 } });
      const ms = performance.now() - t0;
      if (res.status !== 200) throw new Error(`completion failed: ${JSON.stringify(res.body)}`);
      e2e.push(ms);
      inference.push(res.body.timing.inference_ms);
      overhead.push(ms - res.body.timing.inference_ms);
    }
    report("end-to-end latency p50 / p99 (ms)", `${f(median(e2e))} / ${f(pct(e2e, 99))}`);
    report("miner inference p50 (ms)", f(median(inference)));
    report("router added latency p50 / p99 (ms, e2e − inference)", `${f(median(overhead))} / ${f(pct(overhead, 99))}`);

    if (miners.length >= 3) {
      console.log(`\nredundancy: ${N_REDUNDANCY} sequential completions each at k = 1 and k = 3, max_tokens 16`);
      const byK = new Map<number, number[]>();
      for (const k of [1, 3]) {
        const created = await api(router, "/api/v1/sessions", { body: { deposit: 1e8, redundancy: k, max_miners: 3 } });
        const sid = created.body.id as string;
        await waitUntil(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= 3);
        const xs: number[] = [];
        for (let i = 0; i < N_REDUNDANCY; i++) {
          const t0 = performance.now();
          const res = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: `redundancy probe ${i % 5}`, max_tokens: 16 } });
          if (res.status !== 200) throw new Error(`completion failed: ${JSON.stringify(res.body)}`);
          xs.push(performance.now() - t0);
        }
        byK.set(k, xs);
        report(`end-to-end latency p50, k = ${k} (ms)`, f(median(xs)));
      }
      report("latency ratio k = 3 / k = 1 (p50)", f(median(byK.get(3)!) / median(byK.get(1)!)));
    }

    console.log(`\nthroughput: ${CLIENTS} concurrent clients for ${THROUGHPUT_S} s, max_tokens 1, ${MINERS} miners × ${MINER_CONCURRENCY}`);
    let done = 0;
    let failed = 0;
    const until = performance.now() + THROUGHPUT_S * 1000;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        while (performance.now() < until) {
          const res = await api(router, "/api/v1/completions", { body: { prompt: `client ${c}`, max_tokens: 1 } });
          if (res.status === 200) done++;
          else failed++;
        }
      }),
    );
    const elapsed = (performance.now() - t0) / 1000;
    report("completed tasks per second", `${f(done / elapsed, 1)} (${done} ok, ${failed} failed)`);

    await streamingBench(router, "default", 1);
    if (miners.length >= 3) {
      const created = await api(router, "/api/v1/sessions", { body: { deposit: 1e8, redundancy: 3, max_miners: 3 } });
      const sid = created.body.id as string;
      await waitUntil(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= 3);
      await streamingBench(router, sid, 3);
    }
  } finally {
    await Promise.all(miners.map((m) => m.stop("SIGKILL")));
    await router.stop();
  }
}

/**
 * Streamed completions in session `sid` (k replicas): the client's time to its first text chunk, and that less
 * the miner's own first token — for k > 1 the quorum-th fastest replica's, since a streaming client is sent
 * text a quorum of replicas produced (durable-objects/session-queue/stream-prefix.ts).
 */
async function streamingBench(router: Router, sid: string, k: number): Promise<void> {
  console.log(`\nstreaming, k = ${k}: ${N_STREAM} sequential streamed completions, max_tokens 8`);
  const ttft: number[] = [];
  const ttftOverhead: number[] = [];
  const whole: number[] = [];
  for (let i = 0; i < N_STREAM; i++) {
    const t0 = performance.now();
    const res = await fetch(`${router.url}/api/v1/completions/${sid}`, {
      method: "POST",
      headers: { authorization: "Bearer dev-key", "content-type": "application/json" },
      body: JSON.stringify({ prompt: `stream probe ${i % 5}`, max_tokens: 8, stream: true }),
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let first = -1;
    let text = "";
    let taskId = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      if (first < 0 && text.includes('"text":"')) first = performance.now() - t0;
      taskId ||= /"task_id":"(\d+)"/.exec(text)?.[1] ?? "";
    }
    whole.push(performance.now() - t0);
    const task = await api(router, `/api/v1/tasks/${sid}/${taskId}`);
    const firsts = (task.body.replicas as { first_token_ms: number | null }[])
      .map((r) => r.first_token_ms)
      .filter((x): x is number => typeof x === "number")
      .sort((a, b) => a - b);
    const quorumFirst = firsts[Math.min(firsts.length, Math.floor(k / 2) + 1) - 1];
    ttft.push(first);
    if (quorumFirst !== undefined) ttftOverhead.push(first - quorumFirst);
  }
  report(`time to first token p50 / p99, k = ${k} (ms)`, `${f(median(ttft))} / ${f(pct(ttft, 99))}`);
  report(`streaming TTFT overhead p50 / p99, k = ${k} (ms, client − miner)`, `${f(median(ttftOverhead))} / ${f(pct(ttftOverhead, 99))}`);
  report(`streamed completion to [DONE] p50, k = ${k} (ms)`, f(median(whole)));
}

/**
 * v2/v3 off-chain payloads: end-to-end latency of a completion whose prompt is OFFCHAIN_BYTES (1 MiB), sent
 * inline (the router's inline limit raised above it) against through R2 (`payload_policy: "offchain"`: R2 put,
 * URN in the task, the miner fetches and hash-checks it) and private (also sealed and opened with AES-GCM, the
 * miner fetches its task key, and the result goes back encrypted through the signed write). The built-in
 * model has 512 positions and the engine refuses longer inputs, so the prompt template leaves the document out
 * of what the model reads: the engine's work is the same on every path and the differences are the payload's.
 */
async function offchainBench(): Promise<void> {
  const router = await startRouter({ vars: { INLINE_PAYLOAD_LIMIT: String(OFFCHAIN_BYTES + 65_536) } });
  const miner = await startMiner(router.url, { name: "bench-offchain" });
  try {
    await miner.waitFor("ready");
    const created = await api(router, "/api/v1/sessions", { body: { deposit: 1e8, redundancy: 1, max_miners: 1 } });
    const sid = created.body.id as string;
    await waitUntil(async () => (await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners?.length >= 1);
    await api(router, "/api/v1/auth/payload_allowlist", { method: "PUT", body: { session_id: sid, miners: [miner.address()!] } });
    console.log(`\noff-chain payloads: ${OFFCHAIN_N} completions per path, ${OFFCHAIN_BYTES}-byte prompt, max_tokens 1, alternating paths`);
    const paths = {
      inline: { payload_policy: "inline" },
      offchain: { payload_policy: "offchain" },
      private: { private: true, result_policy: "inline" },
    } as const;
    const times: Record<keyof typeof paths, number[]> = { inline: [], offchain: [], private: [] };
    for (let i = -2; i < OFFCHAIN_N; i++) {
      for (const [name, extra] of Object.entries(paths) as [keyof typeof paths, object][]) {
        // A distinct prompt each time: content addressing must not turn a repeat into a cache hit.
        const prompt = `${name} ${i} `.padEnd(OFFCHAIN_BYTES, "lorem ipsum dolor sit amet ");
        const body = { prompt, prompt_template: "Summarize the attached document:", max_tokens: 1, ...extra };
        const t0 = performance.now();
        const res = await api(router, `/api/v3/completions/${sid}`, { body });
        const ms = performance.now() - t0;
        if (res.status !== 200) throw new Error(`${name} completion failed: ${JSON.stringify(res.body).slice(0, 500)}`);
        if (name !== "inline" && !res.body.offchain?.prompt_urn) throw new Error(`${name} prompt did not go off-chain`);
        if (name === "inline" && res.body.offchain?.prompt_urn) throw new Error("inline prompt went off-chain");
        if (i >= 0) times[name].push(ms); // the first two rounds warm up
      }
    }
    const mi = median(times.inline);
    report("1 MiB prompt end-to-end p50: inline (ms)", f(mi));
    report("1 MiB prompt end-to-end p50: off-chain via R2 (ms)", `${f(median(times.offchain))} (added ${f(median(times.offchain) - mi)})`);
    report("1 MiB prompt end-to-end p50: private, encrypted (ms)", `${f(median(times.private))} (added ${f(median(times.private) - mi)})`);
  } finally {
    await miner.stop("SIGKILL");
    await router.stop();
  }
}

async function engineBench(): Promise<void> {
  const { loadEngine } = await import("../miner-agent/src/engine.ts");
  const { bareDecode } = await import("../miner-agent/src/bare-loop.ts");
  const { ensureBuiltinModel } = await import("../miner-agent/src/model/build.ts");
  const { AutoTokenizer } = await import("@huggingface/transformers");
  console.log(`\nengine: ${ENGINE_RUNS} runs × ${ENGINE_TOKENS} new tokens, greedy, CPU, built-in model`);
  const dir = await ensureBuiltinModel(MODEL_CACHE);
  const engine = await loadEngine({ model: "edge/tiny-gpt2", device: "cpu", cacheDir: MODEL_CACHE });
  const tokenizer = await AutoTokenizer.from_pretrained(dir);
  const prompt = "The quick brown fox";
  const ids = Array.from((tokenizer(prompt).input_ids as { data: ArrayLike<bigint> }).data, Number);
  // Stops and EOS are disabled through a long max: both loops decode exactly ENGINE_TOKENS tokens.
  const params = {
    max_tokens: ENGINE_TOKENS,
    temperature: 0,
    top_p: 1,
    top_k: 0,
    presence_penalty: 0,
    frequency_penalty: 0,
    stop: [],
    seed: 0,
  };
  await engine.generate({ input: { prompt, prompt_type: 1 }, params });
  await bareDecode(dir, ids, ENGINE_TOKENS);
  const engineTps: number[] = [];
  const bareTps: number[] = [];
  for (let i = 0; i < ENGINE_RUNS; i++) {
    const t0 = performance.now();
    const r = await engine.generate({ input: { prompt, prompt_type: 1 }, params });
    engineTps.push(r.usage.completion_tokens / ((performance.now() - t0) / 1000));
    const b = await bareDecode(dir, ids, ENGINE_TOKENS);
    bareTps.push(b.ids.length / (b.ms / 1000));
  }
  report("engine tokens/s (median)", f(median(engineTps), 1));
  report("bare onnxruntime-node loop tokens/s (median)", f(median(bareTps), 1));
  report("engine / bare", `${f((100 * median(engineTps)) / median(bareTps), 1)}%`);
  await engine.dispose();
}

console.log(`bench on ${process.platform} ${process.arch}, node ${process.version}`);
if (!only || only === "engine") await engineBench();
if (!only || only === "network") await networkBench();
if (!only || only === "offchain") await offchainBench();
console.log("\nsummary");
for (const [k, v] of rows) console.log(`  ${k.padEnd(58)} ${v}`);
process.exit(0);
