import { describe, expect, it } from "vitest";
import { aggregate, median, medianOfMeans, type Vote } from "../../workers/lib/aggregation.ts";
import {
  clip,
  factcheckPrompt,
  fitMaterial,
  parseRubricOutput,
  RUBRIC_CONSTRAINT,
  VALIDATE_VERDICTS,
  validatePrompt,
} from "../../workers/lib/rubric.ts";

const v = (index: number, key: string | null, extra: Partial<Vote> = {}): Vote => ({ index, key, ...extra });

describe("support counts distinct miners (issue 12)", () => {
  it("replicas of one miner are one voice: no quorum, never unanimous; each strategy alike", () => {
    const one = [v(0, "A", { miners: ["0xm"] }), v(1, "A", { miners: ["0xM"] }), v(2, "A", { miners: ["0xm"] })];
    const a = aggregate(one, { strategy: "majority", policy: "best_effort", requested: 3 });
    expect(a).toMatchObject({ status: "no_quorum", key: "A", agreed: [0, 1, 2] });
    expect(a.agreement).toBeCloseTo(1 / 3);
    expect(a.candidates[0].support).toBe(1);
    expect(aggregate(one, { strategy: "majority", policy: "fail_hard", requested: 3 }).outcome).toBe("failed");
    const scored = one.map((x) => ({ ...x, score: 0.5 }));
    expect(aggregate(scored, { strategy: "median_of_means", policy: "best_effort", requested: 3 }).status).toBe("no_quorum");
    // Two miners (one of them twice) agreeing of three requested: a quorum, but not unanimous.
    const two = [v(0, "A", { miners: ["0xa"] }), v(1, "A", { miners: ["0xb"] }), v(2, "A", { miners: ["0xa"] })];
    expect(aggregate(two, { strategy: "majority", policy: "best_effort", requested: 3 })).toMatchObject({ status: "majority" });
    const three = [v(0, "A", { miners: ["0xa"] }), v(1, "A", { miners: ["0xb"] }), v(2, "A", { miners: ["0xc"] })];
    expect(aggregate(three, { strategy: "majority", policy: "best_effort", requested: 3 })).toMatchObject({
      status: "unanimous",
      agreement: 1,
    });
  });

  it("weighted counts each miner's weight once", () => {
    const votes = [
      v(0, "A", { miners: ["0xa"], weight: 10 }),
      v(1, "A", { miners: ["0xa"], weight: 10 }),
      v(2, "B", { miners: ["0xb"], weight: 15 }),
    ];
    const a = aggregate(votes, { strategy: "weighted", policy: "best_effort", requested: 3 });
    expect(a).toMatchObject({ key: "B", agreed: [2] });
    expect(a.agreement).toBeCloseTo(0.6);
  });

  it("every replica refused the client's deadline: the client's error, deadline_too_short", () => {
    const refused = [v(0, null, { error_code: "deadline_too_short" }), v(1, null, { error_code: "deadline_too_short" })];
    expect(aggregate(refused, { strategy: "majority", policy: "best_effort", requested: 2 }).error?.code).toBe("deadline_too_short");
    const mixed = [v(0, null, { error_code: "deadline_too_short" }), v(1, null, { error_code: "timeout" })];
    expect(aggregate(mixed, { strategy: "majority", policy: "best_effort", requested: 2 }).error?.code).toBe("all_replicas_failed");
  });
});

describe("majority", () => {
  it("unanimous replicas agree", () => {
    const a = aggregate([v(0, "A"), v(1, "A"), v(2, "A")], { strategy: "majority", policy: "best_effort", requested: 3 });
    expect(a).toMatchObject({
      outcome: "ok",
      status: "unanimous",
      key: "A",
      agreed: [0, 1, 2],
      disagreed: [],
      failed: [],
      agreement: 1,
      quorum: 2,
    });
  });

  it("one disagreeing replica: the majority wins and the outlier is named", () => {
    const a = aggregate([v(0, "A"), v(1, "B"), v(2, "A")], { strategy: "majority", policy: "best_effort", requested: 3 });
    expect(a).toMatchObject({ outcome: "ok", status: "majority", key: "A", agreed: [0, 2], disagreed: [1] });
    expect(a.agreement).toBeCloseTo(2 / 3);
    expect(a.candidates.map((c) => [c.key, c.replicas])).toEqual([
      ["A", [0, 2]],
      ["B", [1]],
    ]);
  });

  it("failed replicas count against the quorum", () => {
    const votes = [v(0, "A"), v(1, null, { error_code: "no_miner_available" }), v(2, "B")];
    const best = aggregate(votes, { strategy: "majority", policy: "best_effort", requested: 3 });
    expect(best).toMatchObject({ outcome: "ok", status: "no_quorum", key: "A", failed: [1], disagreed: [2] });
    const all = aggregate(votes, { strategy: "majority", policy: "return_all", requested: 3 });
    expect(all).toMatchObject({ outcome: "no_consensus", status: "no_quorum", key: null });
    expect(all.candidates).toHaveLength(2);
    const hard = aggregate(votes, { strategy: "majority", policy: "fail_hard", requested: 3 });
    expect(hard).toMatchObject({ outcome: "failed", key: null, error: { code: "no_consensus" } });
  });

  it("fail_hard fails on any disagreement even with a quorum; a failed replica alone does not", () => {
    const hard = aggregate([v(0, "A"), v(1, "A"), v(2, "B")], { strategy: "majority", policy: "fail_hard", requested: 3 });
    expect(hard.outcome).toBe("failed");
    expect(hard.error?.code).toBe("no_consensus");
    const ok = aggregate([v(0, "A"), v(1, "A"), v(2, null)], { strategy: "majority", policy: "fail_hard", requested: 3 });
    expect(ok).toMatchObject({ outcome: "ok", status: "majority", key: "A", failed: [2] });
  });

  it("ties break to the group whose first replica came first", () => {
    const a = aggregate([v(0, "B"), v(1, "A"), v(2, "A"), v(3, "B")], { strategy: "majority", policy: "best_effort", requested: 4 });
    expect(a.key).toBe("B");
  });

  it("nothing answered: all_replicas_failed, or timeout when every replica timed out", () => {
    const failed = aggregate([v(0, null, { error_code: "no_miner_available" }), v(1, null, { error_code: "timeout" })], {
      strategy: "majority",
      policy: "best_effort",
      requested: 2,
    });
    expect(failed).toMatchObject({ outcome: "failed", status: "none", failed: [0, 1], error: { code: "all_replicas_failed" } });
    const timedOut = aggregate([v(0, null, { error_code: "timeout" })], { strategy: "majority", policy: "return_all", requested: 1 });
    expect(timedOut.error?.code).toBe("timeout");
  });
});

describe("weighted", () => {
  it("a heavier minority beats a lighter majority", () => {
    const votes = [v(0, "A", { weight: 100 }), v(1, "A", { weight: 100 }), v(2, "B", { weight: 500 })];
    const a = aggregate(votes, { strategy: "weighted", policy: "best_effort", requested: 3 });
    expect(a).toMatchObject({ outcome: "ok", status: "majority", key: "B", agreed: [2], disagreed: [0, 1] });
    expect(a.agreement).toBeCloseTo(500 / 700);
    expect(aggregate(votes, { strategy: "majority", policy: "best_effort", requested: 3 }).key).toBe("A");
  });

  it("exactly half the weight is no quorum; all-zero weights count replicas", () => {
    const half = aggregate([v(0, "A", { weight: 1 }), v(1, "B", { weight: 1 })], {
      strategy: "weighted",
      policy: "return_all",
      requested: 2,
    });
    expect(half.outcome).toBe("no_consensus");
    const zero = aggregate([v(0, "A", { weight: 0 }), v(1, "A", { weight: 0 }), v(2, "B", { weight: 0 })], {
      strategy: "weighted",
      policy: "best_effort",
      requested: 3,
    });
    expect(zero).toMatchObject({ key: "A", status: "majority" });
  });
});

describe("median_of_means", () => {
  it("computes the median of block means", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(medianOfMeans([0.5])).toBe(0.5);
    // 3 values → 2 blocks [a, c], [b]: median of (mean(a,c), b) = their mean.
    expect(medianOfMeans([0.2, 0.8, 0.4])).toBeCloseTo((0.3 + 0.8) / 2);
    // 5 values → 3 blocks [a,d], [b,e], [c].
    expect(medianOfMeans([0.1, 0.9, 0.5, 0.3, 0.7])).toBeCloseTo(0.5);
    expect(() => medianOfMeans([])).toThrow();
  });

  it("replicas near the aggregate agree; the verdict is the most common among them", () => {
    const votes = [
      v(0, "VALID", { score: 0.8 }),
      v(1, "VALID", { score: 0.7 }),
      v(2, "INVALID", { score: 0.1 }),
      v(3, "VALID", { score: 0.75 }),
      v(4, "INVALID", { score: 0.6 }),
    ];
    const a = aggregate(votes, { strategy: "median_of_means", policy: "best_effort", requested: 5 });
    expect(a.score).toBeCloseTo(medianOfMeans([0.8, 0.7, 0.1, 0.75, 0.6]));
    expect(a.key).toBe("VALID");
    expect(a.agreed).toEqual([0, 1, 3]);
    expect(a.disagreed).toEqual([2, 4]);
    expect(a.status).toBe("majority");
  });

  it("a tight tolerance leaves no quorum", () => {
    const votes = [v(0, "A", { score: 0 }), v(1, "A", { score: 0.5 }), v(2, "A", { score: 1 })];
    const a = aggregate(votes, { strategy: "median_of_means", policy: "return_all", requested: 3, tolerance: 0.01 });
    expect(a.outcome).toBe("no_consensus");
    expect(aggregate(votes, { strategy: "median_of_means", policy: "best_effort", requested: 3, tolerance: 0.5 }).status).toBe("unanimous");
  });
});

describe("rubric answers", () => {
  it("parses the grammar and rejects anything else", () => {
    expect(parseRubricOutput("VERDICT: NEEDS_SPEC\nSCORE: 10\nCONFIDENCE: 3", VALIDATE_VERDICTS)).toEqual({
      verdict: "NEEDS_SPEC",
      score: 1,
      confidence: 0.3,
    });
    expect(parseRubricOutput("VERDICT: MAYBE\nSCORE: 1\nCONFIDENCE: 3", VALIDATE_VERDICTS)).toBeNull();
    expect(parseRubricOutput("VERDICT: VALID\nSCORE: 11\nCONFIDENCE: 3", VALIDATE_VERDICTS)).toBeNull();
    expect(parseRubricOutput("random junk", VALIDATE_VERDICTS)).toBeNull();
    const grammar = RUBRIC_CONSTRAINT(VALIDATE_VERDICTS);
    expect(grammar.segments).toHaveLength(6);
    expect(grammar.segments[1]).toEqual({ choice: [...VALIDATE_VERDICTS] });
  });
});

describe("rubric prompts", () => {
  const bytes = (s: string) => new TextEncoder().encode(s).length;

  it("clip cuts at a UTF-8 byte budget without splitting a character", () => {
    expect(clip("short", 10)).toBe("short");
    expect(bytes(clip("x".repeat(100), 20))).toBeLessThanOrEqual(20);
    const cut = clip("日本語".repeat(20), 20);
    expect(bytes(cut)).toBeLessThanOrEqual(20);
    expect(cut).not.toContain("\uFFFD");
    expect(cut.endsWith(" …")).toBe(true);
  });

  it("fitMaterial shares the budget: short pieces whole, long ones evenly", () => {
    const [a, b, c] = fitMaterial(["tiny", "y".repeat(500), "z".repeat(500)], 204);
    expect(a).toBe("tiny");
    expect(bytes(b)).toBeLessThanOrEqual(100);
    expect(bytes(c)).toBeLessThanOrEqual(100);
    expect(bytes(b)).toBeGreaterThan(90);
  });

  it("prompts carry the material within the budget and end with the answer form", () => {
    const long = "w".repeat(10_000);
    const p = validatePrompt({ request: "What is 2+2?", result: long, policy: long, context: long }, 200);
    expect(p).toContain("Request: What is 2+2?");
    expect(p.endsWith("CONFIDENCE: <0-10>\n")).toBe(true);
    expect(bytes(p)).toBeLessThan(200 + 400);
    expect(validatePrompt({ request: "the sky is blue" }, 200)).toContain("Claim: the sky is blue");
    const f = factcheckPrompt(long, [{ title: "T", content: long }, { content: long }], 200);
    expect(f).toMatch(/Source 1 \(T\): w+ …\nSource 2: w+ …\nClaim: w+ …/);
  });
});
