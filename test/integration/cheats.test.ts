import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY, api, type Miner, type Router, sse, startMiner, startRouter, until } from "../helpers/network.ts";

// The fault and cheat suite: the real router and real miner processes, some started with the agent's
// test-only `--test-dishonest <mode>`. Each cheat runs in a redundancy-3 session of two honest miners and the
// cheater (a dedicated session, so exactly those three serve it): the task must complete with the honest
// greedy output, and the task view must name the cheater.
//
// The two honest miners of those sessions hold each result HONEST_DELAY_MS before precommitting
// (`--test-delay-ms`), so the cheater's messages reach the SessionQueue while the task is still open. Nothing
// is revealed before every replica has precommitted (the commit-reveal barrier); then a quorum (2 of 3)
// closes the task at once, and a precommitted replica whose commit comes after that is handled as a straggler
// (see the tests at the end). The bench (`npm run bench:cheats`) runs the real race.
//
// `copy` gets the session owner's API key (MINER_TEST_COPY_API_KEY), the worst case: it reads every route that
// key reaches, waiting for another replica's output or commitment to copy.

const PROMPT = "The honest majority";
const MAX_TOKENS = 12;
const MODES = [
  "junk",
  "wrong-model",
  "bad-commit",
  "replay-signature",
  "silent-after-ack",
  "copy",
  "usage-inflate",
  "oversize",
  "lying-validator",
] as const;
type Mode = (typeof MODES)[number];
const LIVE = new Set(["assigned", "acked", "precommitted"]);
const HONEST_DELAY_MS = 900;

let router: Router;
let honest: Miner[] = [];
const cheaters = new Map<Mode, Miner>();
let honestText = "";
/** A second junk miner, fresh for the streaming test (the first may be benched by then). */
let streamJunk: Miner;

const addr = (m: Miner) => m.address()!.toLowerCase();

beforeAll(async () => {
  router = await startRouter();
  const started = await Promise.all([
    startMiner(router.url, { name: "h1-slow", args: ["--test-delay-ms", String(HONEST_DELAY_MS)] }),
    startMiner(router.url, { name: "h2-slow", args: ["--test-delay-ms", String(HONEST_DELAY_MS)] }),
    startMiner(router.url, { name: "h3" }),
    ...MODES.map((mode) =>
      startMiner(router.url, {
        name: `cheat-${mode}`,
        args: ["--test-dishonest", mode],
        ...(mode === "copy" ? { env: { MINER_TEST_COPY_API_KEY: API_KEY } } : {}),
      }),
    ),
    startMiner(router.url, { name: "cheat-junk-stream", env: { MINER_TEST_DISHONEST: "junk" } }),
  ]);
  streamJunk = started.at(-1)!;
  honest = started.slice(0, 3);
  for (const [i, mode] of MODES.entries()) cheaters.set(mode, started[3 + i]!);
  await Promise.all(started.map((m) => m.waitFor("ready", undefined, 120_000)));
});

afterAll(async () => {
  await Promise.all([...honest, ...cheaters.values(), streamJunk].filter(Boolean).map((m) => m.stop("SIGKILL")));
  await router?.stop();
});

/** A redundancy-3 session served by exactly these miners. */
async function session(miners: Miner[], extra: Record<string, unknown> = {}): Promise<string> {
  const res = await api(router, "/api/v1/sessions", {
    body: {
      deposit: 1_000_000,
      redundancy: 3,
      max_miners: 3,
      mode: "dedicated",
      dedicated_miners: miners.map(addr),
      ...extra,
    },
  });
  expect(res.status).toBe(201);
  await until(async () => {
    const s = await api(router, `/api/v1/sessions/${res.body.id}`);
    return s.body.usage?.connected_miners?.length >= miners.length;
  });
  return res.body.id as string;
}

/** Runs one task and waits until every replica has reached its final state (stragglers included). */
async function runTask(sid: string) {
  const res = await api(router, `/api/v1/completions/${sid}`, {
    // No precommit_timeout: a deadline the client sets cuts a silent replica short without blame (fair
    // deadlines); left to the router's own deadline (ack window + prefill + tokens at its declared speed) it is
    // timed out and penalised.
    body: { prompt: PROMPT, max_tokens: MAX_TOKENS },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const task = await until(
    async () => {
      const t = await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`);
      return t.body.replicas.every((r: { state: string }) => !LIVE.has(r.state)) && t.body;
    },
    4_000,
    200,
  ).catch(async () => (await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`)).body);
  return { res: res.body, task };
}

function replicaOf(task: any, m: Miner) {
  return task.replicas.find((r: { miner: string }) => r.miner.toLowerCase() === addr(m));
}

function expectHonestAgreed(task: any, res: any) {
  expect(task.status).toBe("closed");
  expect(res.choices[0].text).toBe(honestText);
  expect(task.consensus.status).toBe("agreed");
  for (const h of honest.slice(0, 2)) {
    const r = replicaOf(task, h);
    expect(r, `honest ${addr(h)} has a replica`).toBeTruthy();
    expect(r.state).toBe("committed");
    expect(r.agreed).toBe(true);
    expect(task.consensus.outliers).not.toContain(r.miner);
  }
}

let honestTask: any;
let silentTask: any;

describe("honest miners", () => {
  it("three honest miners agree exactly; nobody is accused", async () => {
    const sid = await session(honest);
    const { res, task } = await runTask(sid);
    honestTask = task;
    honestText = res.choices[0].text;
    expect(honestText.length).toBeGreaterThan(0);
    expect(task.consensus).toMatchObject({ method: "exact", status: "agreed", outliers: [] });
    // The quorum (2 of 3) closes the task; the third replica is a straggler.
    expect(task.consensus.agreed.length).toBeGreaterThanOrEqual(2);
    for (const r of task.replicas) {
      expect(["rejected", "timed_out", "released", "disconnected", "cancelled"]).not.toContain(r.state);
      expect(r.agreed).not.toBe(false);
    }
  });
});

describe("cheats are caught and the honest majority wins", () => {
  // Lies that commit are outliers of the consensus; lies the SessionQueue can prove are rejected with a reason.
  const CAUGHT: [Mode, string, { state: "committed" | "rejected"; reason?: RegExp }][] = [
    ["junk", "named an outlier", { state: "committed" }],
    ["wrong-model", "its output differs, so it is named an outlier", { state: "committed" }],
    ["bad-commit", "rejected, commit does not match its precommit", { state: "rejected", reason: /precommit/ }],
    ["replay-signature", "rejected, the signature is not its own", { state: "rejected", reason: /signature/ }],
    ["usage-inflate", "rejected, its usage is beyond what the task allows", { state: "rejected", reason: /usage claims/ }],
    ["oversize", "rejected, its text is beyond max_tokens × 64 bytes", { state: "rejected", reason: /exceeds/ }],
  ];
  it.each(CAUGHT)("%s: %s", async (mode, _, want) => {
    const cheater = cheaters.get(mode)!;
    const { res, task } = await runTask(await session([honest[0]!, honest[1]!, cheater]));
    expectHonestAgreed(task, res);
    const r = replicaOf(task, cheater);
    expect(r.state).toBe(want.state);
    expect(task.consensus.agreed).not.toContain(r.miner);
    if (want.state === "committed") {
      expect(r.agreed).toBe(false);
      expect(task.consensus.outliers).toContain(r.miner);
      expect(task.results.data[task.results.miners.indexOf(r.miner)]).not.toBe(honestText);
    } else {
      expect(r.reason).toMatch(want.reason!);
    }
  });

  it("copy: with the owner's key it finds nothing to copy before it must precommit; its guess is an outlier (0 copies)", async () => {
    const cheater = cheaters.get("copy")!;
    const { res, task } = await runTask(await session([honest[0]!, honest[1]!, cheater]));
    expectHonestAgreed(task, res);
    const r = replicaOf(task, cheater);
    expect(task.consensus.agreed).not.toContain(r.miner);
    expect(r.agreed).not.toBe(true);
    const tries = cheater.events.filter((e) => e.event === "dishonest" && e.mode === "copy" && e.task_id === task.task_id);
    expect(tries).toHaveLength(1);
    expect(tries[0]).toMatchObject({ copied: false, from: null });
    expect(cheater.events.filter((e) => e.event === "dishonest" && e.copied === true)).toEqual([]);
  });

  it("silent-after-ack: the task completes without it; it never commits", async () => {
    const cheater = cheaters.get("silent-after-ack")!;
    const { res, task } = await runTask(await session([honest[0]!, honest[1]!, cheater]));
    silentTask = task;
    expectHonestAgreed(task, res);
    const r = replicaOf(task, cheater);
    expect(r.state).not.toBe("committed");
    expect(r.hash).toBeNull();
    expect(task.consensus.agreed).not.toContain(r.miner);
    expect(cheater.events.some((e) => e.event === "dishonest" && e.mode === "silent-after-ack")).toBe(true);
  });
});

// lying-validator answers junk as a replica and, asked to validate its own task, returns embeddings that make
// its junk the most central output. In a dedicated three-miner similarity session nobody outside the task can
// validate, so the router asks all three replicas and takes the median of their distances: the two honest
// validators outvote the liar, whose replica is still judged an outlier. The seed is pinned: independent samples
// of the trained built-in model are unrelated sentences, as far apart as junk (README, Similarity consensus).
describe("similarity consensus with a lying validator", () => {
  it("lying-validator: its replica is still judged correctly (an outlier); the answer is an honest sample", async () => {
    const liar = cheaters.get("lying-validator")!;
    const sid = await session([honest[0]!, honest[1]!, liar], { consensus: "similarity" });
    const res = await api(router, `/api/v1/completions/${sid}`, { body: { prompt: PROMPT, max_tokens: 48, temperature: 0.8, seed: 7 } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const task = (await api(router, `/api/v1/tasks/${sid}/${res.body.task_id}`)).body;
    expect(task.consensus).toMatchObject({ method: "similarity", status: "agreed" });
    expect(task.consensus.outliers).toEqual([addr(liar)]);
    expect(new Set(task.consensus.agreed)).toEqual(new Set([addr(honest[0]!), addr(honest[1]!)]));
    expect(new Set(task.consensus.similarity.validators)).toEqual(new Set([...honest.slice(0, 2), liar].map(addr)));
    expect(task.consensus.similarity.distances[addr(liar)]).toBeGreaterThan(task.consensus.similarity.threshold);
    expect(res.body.choices[0].text).not.toBe(task.results.data[task.results.miners.indexOf(addr(liar))]);
    // It did lie: its own log says it rewrote its embeddings for this task.
    const lies = liar.events.filter((e) => e.event === "dishonest" && e.mode === "lying-validator" && e.task_id === task.task_id);
    expect(lies).toHaveLength(1);
  });
});

// The SessionQueue streams only text a quorum of replicas produced, so a junk miner that answers first
// (no inference) never reaches the streaming client: what it is sent is the honest consensus.
describe("streaming with a cheater", () => {
  it("junk: a streamed task still completes with the honest result", async () => {
    const sid = await session([honest[0]!, honest[1]!, streamJunk]);
    const res = await sse(router, `/api/v1/completions/${sid}`, { prompt: PROMPT, max_tokens: MAX_TOKENS, stream: true });
    expect(res.status).toBe(200);
    expect(res.events.at(-1)).toBe("[DONE]");
    const chunks = res.events.slice(0, -1).map((e) => JSON.parse(e));
    expect(chunks.at(-1).choices[0].finish_reason).toBe("length");
    expect(chunks.map((c) => c.choices[0].text).join("")).toBe(honestText);
    const tasks = await api(router, `/api/v1/tasks/${sid}`);
    const task = tasks.body.tasks[0];
    expect(task.status).toBe("closed");
    expect(task.result.text).toBe(honestText);
    expect(task.consensus.outliers).toContain(addr(streamJunk));
  });
});

// Stragglers: once every replica has precommitted, a quorum (2 of 3) closes the task at once; replicas still
// live are then held to the same rules and recorded against the consensus when they report. A replica that
// never precommits is no straggler: the commit-reveal barrier waits for it, and it leaves the task first.
async function settledReplica(task: any, m: Miner, final: (state: string) => boolean) {
  return until(
    async () => {
      const t = await api(router, `/api/v1/tasks/${task.session_id}/${task.task_id}`);
      const r = replicaOf(t.body, m);
      return final(r.state) && { r, task: t.body };
    },
    15_000,
    200,
  );
}

describe("stragglers after the quorum closed the task", () => {
  it("a silent replica left the task at its deadline, before the task closed: never a straggler", async () => {
    const { r } = await settledReplica(silentTask, cheaters.get("silent-after-ack")!, (s) => !LIVE.has(s));
    // runTask sets no client deadline, so the router's own (ack window + prefill + tokens at its declared speed)
    // applies: missing it is the miner's fault.
    expect(r.state).toBe("timed_out");
    expect(r.reason).toMatch(/deadline/);
    expect(silentTask.replicas.find((x: { miner: string }) => x.miner === r.miner).state).toBe(r.state);
  });

  it("the third honest replica, committing after the quorum, is recorded as committed and agreeing", async () => {
    const task = await until(
      async () => {
        const t = await api(router, `/api/v1/tasks/${honestTask.session_id}/${honestTask.task_id}`);
        return t.body.replicas.every((r: { state: string }) => !LIVE.has(r.state)) && t.body;
      },
      15_000,
      200,
    );
    expect(task.replicas.filter((r: { state: string }) => r.state !== "committed")).toHaveLength(0);
    expect(task.consensus.agreed).toHaveLength(3);
    expect(task.replicas.every((r: { agreed: boolean }) => r.agreed === true)).toBe(true);
  });
});
