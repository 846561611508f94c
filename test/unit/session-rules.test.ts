import type { Hex } from "viem";
import { describe, expect, it } from "vitest";
import { admissionFailure, ownerFailure, tokenBound } from "../../durable-objects/session-queue/admission.ts";
import { nextDeadline } from "../../durable-objects/session-queue/deadlines.ts";
import { outcomeEntry, replicaOutcomes, type Stamp } from "../../durable-objects/session-queue/outcomes.ts";
import {
  exactVerdict,
  largestHashGroup,
  quorumOf,
  quorumPhase,
  type SettleInput,
  settleStep,
} from "../../durable-objects/session-queue/quorum.ts";
import type { SubmitRequest } from "../../durable-objects/session-queue/rpc.ts";
import { VALIDATION_TIMEOUT_MS } from "../../durable-objects/session-queue/similarity-round.ts";
import { commonPrefix, confirmedPrefix } from "../../durable-objects/session-queue/stream-prefix.ts";
import { type Lingering, newTask, type OpenTask, type Replica, replicaSeed } from "../../durable-objects/session-queue/task.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";
import type { ReplicaState } from "../../shared/task-state.ts";
import type { ConsensusView, SessionConfig } from "../../shared/views.ts";

// The SessionQueue's pure rules (durable-objects/session-queue/): quorum and settling, the streaming prefix,
// ledger outcomes, admission, alarm deadlines and task creation. Each rule is checked against concrete values,
// so breaking it fails a test here.

// ── fixtures ─────────────────────────────────────────────────────────────────────────────────────────────

const H1 = `0x${"11".repeat(32)}` as Hex;
const H2 = `0x${"22".repeat(32)}` as Hex;
const H3 = `0x${"33".repeat(32)}` as Hex;
const MINER_A = "0x00000000000000000000000000000000000000aa";
const MINER_B = "0x00000000000000000000000000000000000000bb";

function config(over: Partial<SessionConfig> = {}): SessionConfig {
  return {
    id: "s-rules",
    name: "rules",
    owner: "owner-1",
    metadata: {},
    model: "edge/tiny-gpt2",
    min_miners: 1,
    max_miners: 5,
    redundancy: 3,
    validator_count: 1,
    consensus: "auto",
    dispersion_threshold: 0.75,
    embedding_model: "edge/tiny-embed",
    mode: "ephemeral",
    dedicated_miners: [],
    task_timeout: 60,
    ack_timeout: 5,
    deposit: 1_000,
    created_at: 0,
    ...over,
  };
}

function request(over: Partial<SubmitRequest> = {}, params: Partial<SubmitRequest["params"]> = {}): SubmitRequest {
  return {
    input: { prompt: "Hello", prompt_type: 0 },
    params: { max_tokens: 16, temperature: 0, top_p: 1, top_k: 0, presence_penalty: 0, frequency_penalty: 0, stop: [], ...params },
    stream: false,
    owner: "owner-1",
    ...over,
  };
}

function replica(miner: string, state: ReplicaState, over: Partial<Replica> = {}): Replica {
  return {
    miner,
    state,
    assigned_at: 1_000,
    ack_deadline: 6_000,
    commit_deadline: 61_000,
    acked_at: null,
    commitment: null,
    hash: null,
    streamed: "",
    ...over,
  };
}

function openTask(replicas: Replica[], over: Partial<OpenTask> = {}): OpenTask {
  const { task } = newTask(config(), request(), 7, 1_000, 21);
  return { ...task, replicas: new Map(replicas.map((r) => [r.miner, r])), ...over };
}

const STAMP: Stamp = { session_id: "s-rules", at: 99_000, block: 42 };

// ── quorum ───────────────────────────────────────────────────────────────────────────────────────────────

describe("quorumOf", () => {
  it("is a strict majority of the replica slots", () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(quorumOf)).toEqual([1, 2, 2, 3, 3, 4, 4]);
  });
});

describe("quorumPhase", () => {
  it("k=3: the phase the second-furthest replica reached (a quorum of 2)", () => {
    expect(quorumPhase(["committed", "acked", "assigned"], 3)).toBe("acked");
    expect(quorumPhase(["committed", "committed", "assigned"], 3)).toBe("committed");
    expect(quorumPhase(["assigned", "precommitted", "precommitted"], 3)).toBe("precommitted");
  });

  it("one fast replica does not move a k=3 task forward", () => {
    expect(quorumPhase(["committed", "assigned", "assigned"], 3)).toBe("assigned");
  });

  it("k=1: the one replica's phase", () => {
    expect(quorumPhase(["precommitted"], 1)).toBe("precommitted");
    expect(quorumPhase(["committed"], 1)).toBe("committed");
  });

  it("k=5 needs three replicas at a phase", () => {
    expect(quorumPhase(["committed", "committed", "acked", "acked", "assigned"], 5)).toBe("acked");
    expect(quorumPhase(["committed", "committed", "committed", "acked", "assigned"], 5)).toBe("committed");
  });

  it("with fewer counted replicas than a quorum, the furthest phase all of them reached", () => {
    expect(quorumPhase(["acked"], 3)).toBe("acked");
    expect(quorumPhase(["committed", "assigned"], 5)).toBe("assigned");
    expect(quorumPhase(["committed", "precommitted"], 5)).toBe("precommitted");
  });

  it("nothing counted is queued; ended replicas count as nothing", () => {
    expect(quorumPhase([], 3)).toBe("queued");
    expect(quorumPhase(["committed", "rejected", "timed_out"], 3)).toBe("queued");
    expect(quorumPhase(["committed", "committed", "rejected"], 3)).toBe("committed");
  });
});

describe("largestHashGroup", () => {
  it("is undefined without committed replicas", () => {
    expect(largestHashGroup([])).toBeUndefined();
  });

  it("groups equal hashes and returns the largest group, members in order, as the same objects", () => {
    const a = { miner: "a", hash: H1 };
    const b = { miner: "b", hash: H2 };
    const c = { miner: "c", hash: H1 };
    const group = largestHashGroup([a, b, c])!;
    expect(group.map((r) => r.miner)).toEqual(["a", "c"]);
    expect(group[0]).toBe(a);
    expect(group[1]).toBe(c);
  });

  it("on a tie, the group whose first member came first wins", () => {
    const rows = (spec: [string, Hex][]) => spec.map(([miner, hash]) => ({ miner, hash }));
    expect(
      largestHashGroup(
        rows([
          ["x", H1],
          ["y", H2],
        ]),
      )!.map((r) => r.miner),
    ).toEqual(["x"]);
    expect(
      largestHashGroup(
        rows([
          ["y", H2],
          ["x", H1],
        ]),
      )!.map((r) => r.miner),
    ).toEqual(["y"]);
    expect(
      largestHashGroup(
        rows([
          ["a", H2],
          ["b", H1],
          ["c", H1],
          ["d", H2],
        ]),
      )!.map((r) => r.miner),
    ).toEqual(["a", "d"]);
    expect(
      largestHashGroup(
        rows([
          ["a", H3],
          ["b", H1],
          ["c", H2],
          ["d", H1],
          ["e", H2],
        ]),
      )!.map((r) => r.miner),
    ).toEqual(["b", "d"]);
  });
});

describe("settleStep", () => {
  const step = (over: Partial<SettleInput>) =>
    settleStep({ mode: "auto", redundancy: 3, committed: 0, best: 0, live: false, filling: false, ...over });

  it("waits while nothing is committed, whatever the mode", () => {
    for (const mode of ["auto", "exact", "similarity"] as const) {
      expect(step({ mode, committed: 0, best: 0, live: false })).toBe("wait");
      expect(step({ mode, redundancy: 1, committed: 0, best: 0, live: false })).toBe("wait");
    }
  });

  it("k=1 (single): the one commit settles by hash in every mode", () => {
    for (const mode of ["auto", "exact", "similarity"] as const) {
      expect(step({ mode, redundancy: 1, committed: 1, best: 1 })).toBe("exact");
      // a similarity session with k = 1 has nothing to compare: it does not wait for slots either
      expect(step({ mode, redundancy: 1, committed: 1, best: 1, filling: true })).toBe("exact");
    }
  });

  it("auto k=3: two equal hashes (a quorum of 2 of 3) close the task while the third still runs", () => {
    expect(step({ committed: 2, best: 2, live: true })).toBe("exact");
  });

  it("auto k=3: two different hashes wait for the third replica", () => {
    expect(step({ committed: 2, best: 1, live: true })).toBe("wait");
  });

  it("auto k=3: one commit and nothing running is not a quorum yet", () => {
    expect(step({ committed: 1, best: 1, live: false })).toBe("wait");
  });

  it("auto: disagreement with nothing left running goes to similarity", () => {
    expect(step({ committed: 2, best: 1, live: false })).toBe("similarity");
    expect(step({ committed: 3, best: 1, live: false })).toBe("similarity");
    expect(step({ redundancy: 2, committed: 2, best: 1, live: false })).toBe("similarity");
  });

  it("auto: a quorum group among disagreeing hashes settles by hash (the rest are outliers)", () => {
    expect(step({ committed: 3, best: 2, live: false })).toBe("exact");
    expect(step({ redundancy: 5, committed: 4, best: 3, live: true })).toBe("exact");
  });

  it("exact: a quorum closes early, but without one the task waits for every slot", () => {
    expect(step({ mode: "exact", committed: 2, best: 2, live: true })).toBe("exact");
    expect(step({ mode: "exact", committed: 2, best: 1, live: false })).toBe("wait");
    expect(step({ mode: "exact", redundancy: 5, committed: 4, best: 2, live: false })).toBe("wait");
  });

  it("exact: every slot in without a quorum settles by the largest group, never by similarity", () => {
    expect(step({ mode: "exact", committed: 3, best: 1, live: false })).toBe("exact");
    expect(step({ mode: "exact", committed: 3, best: 2, live: false })).toBe("exact");
  });

  it("similarity k>1 waits while a replica is live or a slot may still be filled, even with an agreeing pair", () => {
    expect(step({ mode: "similarity", committed: 2, best: 2, live: true })).toBe("wait");
    expect(step({ mode: "similarity", committed: 2, best: 2, live: false, filling: true })).toBe("wait");
    expect(step({ mode: "similarity", committed: 2, best: 1, live: false, filling: true })).toBe("wait");
    expect(step({ mode: "similarity", redundancy: 2, committed: 1, best: 1, live: true })).toBe("wait");
  });

  it("similarity k>1 waits for a quorum of commits when nothing else can come", () => {
    expect(step({ mode: "similarity", committed: 1, best: 1, live: false, filling: false })).toBe("wait");
  });

  it("similarity k>1, all in: any difference goes to validators, even when a quorum agrees; unanimity is exact", () => {
    expect(step({ mode: "similarity", committed: 3, best: 2, live: false })).toBe("similarity");
    expect(step({ mode: "similarity", committed: 3, best: 1, live: false })).toBe("similarity");
    expect(step({ mode: "similarity", committed: 2, best: 1, live: false })).toBe("similarity");
    expect(step({ mode: "similarity", committed: 3, best: 3, live: false })).toBe("exact");
    expect(step({ mode: "similarity", committed: 2, best: 2, live: false })).toBe("exact");
  });

  it("never similarity with fewer than two commits", () => {
    for (const mode of ["auto", "exact", "similarity"] as const) {
      for (const redundancy of [1, 2, 3]) {
        for (const live of [false, true]) {
          for (const filling of [false, true]) {
            for (const best of [0, 1]) {
              expect(step({ mode, redundancy, committed: 1, best, live, filling })).not.toBe("similarity");
            }
          }
        }
      }
    }
    // The guard itself: a lone commit whose hash group is under-reported still settles by hash.
    expect(step({ mode: "auto", redundancy: 1, committed: 1, best: 0, live: false })).toBe("exact");
  });
});

describe("exactVerdict", () => {
  it("k=3, two agree: agreed, the first of the group chosen, the other an outlier", () => {
    const v = exactVerdict(
      [
        { miner: "a", hash: H1 },
        { miner: "b", hash: H2 },
        { miner: "c", hash: H1 },
      ],
      3,
    );
    expect(v).toEqual({
      chosen: "a",
      consensus: { method: "exact", status: "agreed", quorum: 2, hash: H1, agreed: ["a", "c"], outliers: ["b"] },
    });
    expect("note" in v.consensus).toBe(false);
  });

  it("k=3, two differ: no_quorum, the first group stands", () => {
    const v = exactVerdict(
      [
        { miner: "b", hash: H2 },
        { miner: "a", hash: H1 },
      ],
      3,
    );
    expect(v.chosen).toBe("b");
    expect(v.consensus).toEqual({ method: "exact", status: "no_quorum", quorum: 2, hash: H2, agreed: ["b"], outliers: ["a"] });
  });

  it("k=5: two equal of three is no quorum (3 needed)", () => {
    const v = exactVerdict(
      [
        { miner: "a", hash: H1 },
        { miner: "b", hash: H1 },
        { miner: "c", hash: H2 },
      ],
      5,
    );
    expect(v.consensus.status).toBe("no_quorum");
    expect(v.consensus.quorum).toBe(3);
    expect(v.consensus.agreed).toEqual(["a", "b"]);
  });

  it("k=1 is `single` and agreed", () => {
    expect(exactVerdict([{ miner: "a", hash: H1 }], 1)).toEqual({
      chosen: "a",
      consensus: { method: "single", status: "agreed", quorum: 1, hash: H1, agreed: ["a"], outliers: [] },
    });
  });

  it("takes an explicit method and a note", () => {
    const v = exactVerdict([{ miner: "a", hash: H1 }], 1, { method: "exact", note: "fell back" });
    expect(v.consensus.method).toBe("exact");
    expect(v.consensus.note).toBe("fell back");
  });

  it("refuses an empty set", () => {
    expect(() => exactVerdict([], 3)).toThrow(/at least one committed replica/);
  });
});

// ── streaming prefix ─────────────────────────────────────────────────────────────────────────────────────

describe("commonPrefix", () => {
  it("counts the shared characters", () => {
    expect(commonPrefix("hello world", "hello there", 0)).toBe(6);
    expect(commonPrefix("abc", "abcdef", 0)).toBe(3);
    expect(commonPrefix("abcdef", "abc", 0)).toBe(3);
    expect(commonPrefix("same", "same", 0)).toBe(4);
    expect(commonPrefix("x", "y", 0)).toBe(0);
    expect(commonPrefix("", "abc", 0)).toBe(0);
  });

  it("starts at `from`, trusting the given agreement before it", () => {
    expect(commonPrefix("abcX", "abcY", 2)).toBe(3);
    expect(commonPrefix("xbcd", "ybcz", 1)).toBe(3);
    expect(commonPrefix("abc", "abd", 3)).toBe(3);
  });
});

describe("confirmedPrefix", () => {
  it("k=3: a fast replica racing ahead is not sent until a second one agrees", () => {
    expect(confirmedPrefix(["Hello world", "", ""], "", 2)).toBeNull();
    expect(confirmedPrefix(["Hello world", "Hel", ""], "", 2)).toBe("Hel");
    expect(confirmedPrefix(["Hello world, and more", "Hello wor", "Hello"], "Hel", 2)).toBe("Hello wor");
    expect(confirmedPrefix(["Hello world, and more", "Hello wor", "Hello world, and"], "Hello wor", 2)).toBe("Hello world, and");
  });

  it("a lone fast liar's text never reaches the client", () => {
    expect(confirmedPrefix(["LIES AND MORE LIES", "Hello", ""], "", 2)).toBeNull();
    expect(confirmedPrefix(["LIES AND MORE LIES", "Hello", "Hel"], "", 2)).toBe("Hel");
    // the liar shares the start, then diverges: only the honest pair's agreement goes out
    expect(confirmedPrefix(["Hello LIES LIES", "Hello world", "Hello wo"], "", 2)).toBe("Hello wo");
  });

  it("the longest text a quorum shares, whichever pair it is", () => {
    expect(confirmedPrefix(["abcd", "abcx", "abzz"], "", 2)).toBe("abc");
    expect(confirmedPrefix(["abzz", "abcx", "abcd"], "", 2)).toBe("abc");
    expect(confirmedPrefix(["same text", "same text", "same text"], "", 2)).toBe("same text");
  });

  it("k=5: three streams must share the text", () => {
    expect(confirmedPrefix(["abcdef", "abcdef", "abc", "", ""], "", 3)).toBe("abc");
    expect(confirmedPrefix(["abcdef", "abcdef", "", "", ""], "", 3)).toBeNull();
  });

  it("k=1: the one replica's text goes out as it comes", () => {
    expect(confirmedPrefix(["Hel"], "", 1)).toBe("Hel");
    expect(confirmedPrefix(["Hello"], "Hel", 1)).toBe("Hello");
    expect(confirmedPrefix(["Hello"], "Hello", 1)).toBeNull();
  });

  it("a replacement resumes after what was sent: nothing until it gets past it", () => {
    // The first replica sent "Hello" and dropped; its replacement streams from scratch.
    expect(confirmedPrefix(["Hel"], "Hello", 1)).toBeNull();
    expect(confirmedPrefix(["Hello"], "Hello", 1)).toBeNull();
    expect(confirmedPrefix(["Hello wor"], "Hello", 1)).toBe("Hello wor");
    expect(confirmedPrefix(["", "Hello w", "Hello wo"], "Hello", 2)).toBe("Hello w");
  });

  it("a stream that diverged from what was sent is ignored", () => {
    expect(confirmedPrefix(["Help me"], "Hello", 1)).toBeNull();
    // two diverged streams agree with each other, yet are not what the client holds
    expect(confirmedPrefix(["The dog sat", "The dog sat", "The cat sat"], "The cat", 2)).toBeNull();
    expect(confirmedPrefix(["The dog sat", "The cat sat", "The cat s"], "The cat", 2)).toBe("The cat s");
  });

  it("no more than a quorum of streams is nothing", () => {
    expect(confirmedPrefix([], "", 1)).toBeNull();
    expect(confirmedPrefix(["abc"], "", 2)).toBeNull();
  });
});

// ── ledger outcomes ──────────────────────────────────────────────────────────────────────────────────────

describe("replicaOutcomes", () => {
  const agreedConsensus = (agreed: string[], outliers: string[]): ConsensusView => ({
    method: "exact",
    status: "agreed",
    quorum: 2,
    hash: H1,
    agreed,
    outliers,
  });

  it("agreed replicas share the tokens, outliers are penalised, ended ones answer for how they ended", () => {
    const task = openTask([
      replica("a", "committed", { hash: H1, committed_at: 1_600 }),
      replica("b", "committed", { hash: H1, committed_at: 1_900, assigned_at: 1_100 }),
      replica("c", "committed", { hash: H2, committed_at: 1_300 }),
      replica("d", "rejected", { reason: "precommit signature does not recover to the miner" }),
      replica("e", "timed_out", { reason: "missed the ack deadline" }),
      replica("f", "disconnected", { reason: "socket closed" }),
      replica("g", "released"),
      replica("h", "precommitted"), // a straggler: judged later, not here
      replica("i", "cancelled"),
    ]);
    const out = replicaOutcomes(task, agreedConsensus(["a", "b"], ["c"]), 11, false, STAMP);
    // Each entry names the task's submitter, so ledger readers see the ids of their own tasks only.
    const base = { session_id: "s-rules", task_id: "7", owner: "owner-1", at: 99_000, block: 42 };
    expect(out).toEqual([
      { ...base, miner: "a", outcome: "agreed", reason: null, latency_ms: 600, reward: 5 },
      { ...base, miner: "b", outcome: "agreed", reason: null, latency_ms: 800, reward: 5 },
      { ...base, miner: "c", outcome: "outlier", reason: "result disagrees with consensus", latency_ms: 300, reward: 0 },
      {
        ...base,
        miner: "d",
        outcome: "rejected",
        reason: "precommit signature does not recover to the miner",
        latency_ms: null,
        reward: 0,
      },
      { ...base, miner: "e", outcome: "timed_out", reason: "missed the ack deadline", latency_ms: null, reward: 0 },
      { ...base, miner: "f", outcome: "disconnected", reason: "socket closed", latency_ms: null, reward: 0 },
      { ...base, miner: "g", outcome: "released", reason: null, latency_ms: null, reward: 0 },
    ]);
  });

  it("splits the tokens evenly, rounding down", () => {
    const task = openTask(["a", "b", "c"].map((m) => replica(m, "committed", { hash: H1, committed_at: 2_000 })));
    const out = replicaOutcomes(task, agreedConsensus(["a", "b", "c"], []), 10, false, STAMP);
    expect(out.map((o) => [o.miner, o.outcome, o.reward])).toEqual([
      ["a", "agreed", 3],
      ["b", "agreed", 3],
      ["c", "agreed", 3],
    ]);
    const single = openTask([replica("a", "committed", { hash: H1, committed_at: 2_000 })]);
    expect(replicaOutcomes(single, { ...agreedConsensus(["a"], []), method: "single", quorum: 1 }, 10, false, STAMP)[0].reward).toBe(10);
  });

  it("no quorum: committed replicas are neither rewarded nor outliers; ended ones still answer", () => {
    const task = openTask([
      replica("a", "committed", { hash: H1, committed_at: 2_000 }),
      replica("b", "committed", { hash: H2, committed_at: 2_000 }),
      replica("c", "rejected", { reason: "commit does not match the precommitted hash" }),
    ]);
    const out = replicaOutcomes(task, { ...agreedConsensus(["a"], ["b"]), status: "no_quorum" }, 10, false, STAMP);
    expect(out.map((o) => [o.miner, o.outcome, o.reward])).toEqual([["c", "rejected", 0]]);
  });

  it("a task timeout times out the live replicas past their own deadlines; those the client's deadline cut short go unblamed", () => {
    // The task's deadline is 61 s (created at 1 s, task_timeout 60 s).
    const task = openTask([
      replica("a", "assigned"),
      replica("b", "acked"),
      replica("c", "precommitted"),
      replica("d", "committed", { hash: H1, committed_at: 2_000 }),
      replica("e", "timed_out", { reason: "missed the commit deadline" }),
      // Assigned late: its ack window and precommit budget end after the client's deadline.
      replica("f", "assigned", { ack_deadline: 62_000, commit_deadline: 90_000 }),
      replica("g", "acked", { commit_deadline: 90_000 }),
    ]);
    const out = replicaOutcomes(task, null, 0, true, STAMP);
    expect(out.map((o) => [o.miner, o.outcome, o.reason, o.reward])).toEqual([
      ["a", "timed_out", "missed its ack deadline before the task deadline", 0],
      ["b", "timed_out", "missed its commit deadline before the task deadline", 0],
      ["c", "timed_out", "missed its commit deadline before the task deadline", 0],
      ["e", "timed_out", "missed the commit deadline", 0],
    ]);
  });

  it("a failure that is not a timeout leaves live replicas alone", () => {
    const task = openTask([replica("a", "acked"), replica("b", "disconnected", { reason: "gone" })]);
    expect(replicaOutcomes(task, null, 0, false, STAMP).map((o) => [o.miner, o.outcome])).toEqual([["b", "disconnected"]]);
  });
});

describe("outcomeEntry", () => {
  it("a straggler's entry is unrewarded unless told otherwise, with its latency when committed", () => {
    const task = openTask([]);
    const late = replica(MINER_A, "committed", { assigned_at: 5_000, committed_at: 7_500 });
    expect(outcomeEntry(task, late, "agreed", "committed after the quorum closed the task", STAMP)).toEqual({
      miner: MINER_A,
      session_id: "s-rules",
      task_id: "7",
      owner: "owner-1",
      outcome: "agreed",
      reason: "committed after the quorum closed the task",
      latency_ms: 2_500,
      reward: 0,
      at: 99_000,
      block: 42,
    });
    expect(outcomeEntry(task, replica(MINER_B, "timed_out"), "timed_out", null, STAMP, 4)).toMatchObject({
      miner: MINER_B,
      outcome: "timed_out",
      reason: null,
      latency_ms: null,
      reward: 4,
    });
  });
});

// ── admission ────────────────────────────────────────────────────────────────────────────────────────────

describe("tokenBound", () => {
  it("prompt and template UTF-8 bytes, off-chain prompt bytes and max_tokens", () => {
    expect(tokenBound(request({ input: { prompt: "Hello", prompt_type: 0 } }, { max_tokens: 16 }))).toBe(21);
    // "héllo" is 6 bytes, "<s>{prompt}" 11, "€" 3
    expect(tokenBound(request({ input: { prompt: "héllo€", prompt_type: 0, prompt_template: "<s>{prompt}" } }, { max_tokens: 50 }))).toBe(
      9 + 11 + 50,
    );
    const payload: PayloadDescriptor = { prompt_bytes: 1_234, encrypted: true, result_policy: "offchain", inline_limit: 0 };
    expect(tokenBound(request({ input: { prompt: "", prompt_type: 1 }, payload }, { max_tokens: 100 }))).toBe(1_334);
  });
});

describe("ownerFailure", () => {
  it("a session serves its owner; a shared session serves everyone; to another owner it is unknown", () => {
    expect(ownerFailure(config({ owner: "owner-1" }), "owner-1")).toBeNull();
    expect(ownerFailure(config({ owner: "*" }), "anyone")).toBeNull();
    // The answer an id nobody has gets: another owner's session is not revealed to exist.
    expect(ownerFailure(config({ id: "s9", owner: "owner-1" }), "owner-2")).toEqual({
      code: "session_not_found",
      message: "unknown session s9",
    });
  });
});

describe("admissionFailure", () => {
  const none = { used: 0, reserved: 0 };

  it("admits a request its owner sends for the session's model within the deposit", () => {
    expect(admissionFailure(config(), request(), none)).toBeNull();
    expect(admissionFailure(config(), request({ model: "edge/tiny-gpt2" }), none)).toBeNull();
  });

  it("checks the owner first", () => {
    const f = admissionFailure(config({ deposit: 0 }), request({ owner: "intruder", model: "other" }), none);
    expect(f?.code).toBe("session_not_found");
  });

  it("refuses another model", () => {
    expect(admissionFailure(config({ id: "s9", deposit: 0 }), request({ model: "other/model" }), none)).toEqual({
      code: "invalid_request",
      message: "session s9 serves model edge/tiny-gpt2, not other/model",
      details: [{ path: "model", message: "expected edge/tiny-gpt2" }],
    });
  });

  it("the deposit less what is used and reserved must cover the bound, exactly at the edge", () => {
    // bound: "Hello" (5) + 16 = 21; available = 100 - 50 - 29 = 21
    expect(admissionFailure(config({ deposit: 100 }), request(), { used: 50, reserved: 29 })).toBeNull();
    expect(admissionFailure(config({ id: "s9", deposit: 100 }), request(), { used: 50, reserved: 30 })).toEqual({
      code: "deposit_exhausted",
      message: "session s9 has 20 tokens available; this task may use up to 21",
      details: { deposit: 100, used: 50, reserved: 30, required: 21 },
    });
  });
});

// ── deadlines ────────────────────────────────────────────────────────────────────────────────────────────

describe("nextDeadline", () => {
  const NOW = 10_000;

  it("is null with nothing to watch", () => {
    expect(nextDeadline([], [], [], false, NOW)).toBeNull();
    expect(nextDeadline([], [], [], true, NOW)).toBeNull();
  });

  it("the earliest of a task's deadline and its live replicas' phase deadlines (ack while assigned, else commit)", () => {
    const task = openTask(
      [
        replica("a", "assigned", { ack_deadline: 30_000, commit_deadline: 12_000 }),
        replica("b", "acked", { ack_deadline: 11_000, commit_deadline: 40_000 }),
        replica("c", "precommitted", { ack_deadline: 11_000, commit_deadline: 35_000 }),
        replica("d", "committed", { ack_deadline: 11_000, commit_deadline: 11_500 }),
        replica("e", "rejected", { ack_deadline: 11_000, commit_deadline: 11_500 }),
      ],
      { deadline_at: 90_000 },
    );
    expect(nextDeadline([task], [], [], false, NOW)).toBe(30_000);
    const later = openTask([replica("a", "assigned", { ack_deadline: 30_000 })], { deadline_at: 25_000 });
    expect(nextDeadline([task, later], [], [], false, NOW)).toBe(25_000);
  });

  it("similarity sessions also wake when a task stops waiting for an empty slot", () => {
    const task = openTask([], { deadline_at: 100_000 });
    expect(nextDeadline([task], [], [], false, NOW)).toBe(100_000);
    expect(nextDeadline([task], [], [], true, NOW)).toBe(100_000 - VALIDATION_TIMEOUT_MS);
    // once that moment has passed, only the task deadline remains
    expect(nextDeadline([task], [], [], true, 100_000 - VALIDATION_TIMEOUT_MS)).toBe(100_000);
    expect(nextDeadline([task], [], [], true, 95_000)).toBe(100_000);
  });

  it("stragglers count by their live replicas' phase deadlines, not their closed task's deadline", () => {
    const closed = openTask(
      [replica("a", "precommitted", { commit_deadline: 70_000 }), replica("b", "committed", { commit_deadline: 20_000 })],
      { state: "closed", deadline_at: 15_000 },
    );
    const consensus: ConsensusView = { method: "exact", status: "agreed", quorum: 2, hash: H1, agreed: ["b"], outliers: [] };
    const lingering: Lingering[] = [{ task: closed, consensus }];
    expect(nextDeadline([], lingering, [], false, NOW)).toBe(70_000);
    expect(nextDeadline([openTask([], { deadline_at: 80_000 })], lingering, [], false, NOW)).toBe(70_000);
  });

  it("validators' answer deadlines count", () => {
    expect(nextDeadline([openTask([], { deadline_at: 80_000 })], [], [50_000, 45_000], false, NOW)).toBe(45_000);
  });
});

// ── task creation ────────────────────────────────────────────────────────────────────────────────────────

describe("replicaSeed", () => {
  it("is a stable 31-bit seed per (seed, miner), whatever the address case", () => {
    expect(replicaSeed(42, MINER_A)).toBe(2_100_106_773);
    expect(replicaSeed(42, MINER_B)).toBe(1_412_077_299);
    expect(replicaSeed(43, MINER_A)).toBe(818_306_508);
    expect(replicaSeed(42, MINER_A.toUpperCase().replace("0X", "0x"))).toBe(2_100_106_773);
    for (let seed = 0; seed < 50; seed++) {
      const s = replicaSeed(seed, MINER_B);
      expect(Number.isInteger(s) && s >= 0 && s <= 2 ** 31 - 1).toBe(true);
    }
  });
});

describe("newTask", () => {
  it("builds a queued task and its assign template from the request", () => {
    const req = request({ stream: true, timeout_s: 2.5, input: { prompt: "Hi", prompt_type: 1 } }, { temperature: 0 });
    const { task, request: stored } = newTask(config({ id: "s1", model: "m" }), req, 42, 1_000_000, 18);
    expect(task).toMatchObject({
      id: 42,
      owner: "owner-1", // the submitter: on a shared session, the one caller that sees the task
      state: "queued",
      redundancy: 3,
      deadline_at: 1_002_500,
      reservedTokens: 18,
      stream: true,
      precommit_ms: 2_500,
      independentSeeds: false,
    });
    expect(task.replicas.size).toBe(0);
    expect(task.assign).toEqual({
      type: "assign",
      session_id: "s1",
      task_id: "42",
      model: "m",
      input: { prompt: "Hi", prompt_type: 1 },
      params: { ...req.params, seed: 42 },
      stream: true,
    });
    expect(stored).toEqual({ input: { prompt: "Hi", prompt_type: 1 }, params: { ...req.params, seed: 42 } });
  });

  it("times: the request's timeout, else the session's; the precommit timeout before both", () => {
    expect(newTask(config({ task_timeout: 60 }), request(), 1, 5_000, 0).task).toMatchObject({ deadline_at: 65_000, precommit_ms: 60_000 });
    expect(newTask(config(), request({ timeout_s: 30, precommit_timeout_s: 4 }), 1, 5_000, 0).task).toMatchObject({
      deadline_at: 35_000,
      precommit_ms: 4_000,
    });
  });

  it("the seed defaults to the task id; a pinned seed stays", () => {
    expect(newTask(config(), request({}, { temperature: 0.8 }), 42, 0, 0).task.assign.params.seed).toBe(42);
    expect(newTask(config(), request({}, { temperature: 0.8, seed: 7 }), 42, 0, 0).task.assign.params.seed).toBe(7);
    expect(newTask(config(), request({}, { temperature: 0.8, seed: 0 }), 42, 0, 0).request.params.seed).toBe(0);
  });

  it("independent seeds only for similarity + sampled + unpinned seed", () => {
    const sim = config({ consensus: "similarity" });
    const sampled = newTask(sim, request({}, { temperature: 0.8 }), 5, 0, 0);
    expect(sampled.task.independentSeeds).toBe(true);
    expect(sampled.request.independent_seeds).toBe(true);
    const greedy = newTask(sim, request({}, { temperature: 0 }), 5, 0, 0);
    expect(greedy.task.independentSeeds).toBe(false);
    expect("independent_seeds" in greedy.request).toBe(false);
    const pinned = newTask(sim, request({}, { temperature: 0.8, seed: 9 }), 5, 0, 0);
    expect(pinned.task.independentSeeds).toBe(false);
    expect("independent_seeds" in pinned.request).toBe(false);
    for (const consensus of ["auto", "exact"] as const) {
      expect(newTask(config({ consensus }), request({}, { temperature: 0.8 }), 5, 0, 0).task.independentSeeds).toBe(false);
    }
  });

  it("redundancy: the session's, capped by max_miners, at least 1", () => {
    const k = (redundancy: number, max_miners?: number) =>
      newTask(config({ redundancy }), request(max_miners === undefined ? {} : { max_miners }), 1, 0, 0).task.redundancy;
    expect(k(3)).toBe(3);
    expect(k(3, 1)).toBe(1);
    expect(k(3, 2)).toBe(2);
    expect(k(3, 5)).toBe(3);
    expect(k(3, 0)).toBe(1);
    expect(k(0)).toBe(1);
  });

  it("carries an off-chain payload in the assign and the stored request", () => {
    const payload: PayloadDescriptor = { prompt_bytes: 10, encrypted: false, result_policy: "offchain", inline_limit: 0 };
    const { task, request: stored } = newTask(config(), request({ payload, input: { prompt: "", prompt_type: 0 } }), 3, 0, 0);
    expect(task.assign.payload).toEqual(payload);
    expect(stored.payload).toEqual(payload);
    expect("payload" in newTask(config(), request(), 3, 0, 0).task.assign).toBe(false);
  });
});
