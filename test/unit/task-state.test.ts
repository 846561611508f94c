import { describe, expect, it } from "vitest";
import { canTransition, isTerminal } from "../../shared/task-state.ts";

describe("task state machine", () => {
  it("moves forward through the lifecycle", () => {
    const path = ["queued", "assigned", "acked", "precommitted", "committed", "validated", "closed"] as const;
    for (let i = 0; i + 1 < path.length; i++) expect(canTransition(path[i], path[i + 1])).toBe(true);
  });
  it("never moves back and never leaves a terminal state", () => {
    expect(canTransition("acked", "assigned")).toBe(false);
    expect(canTransition("closed", "failed")).toBe(false);
    expect(canTransition("failed", "queued")).toBe(false);
    expect(isTerminal("failed")).toBe(true);
    expect(isTerminal("committed")).toBe(false);
  });
  it("lets any open state fail", () => {
    for (const s of ["queued", "assigned", "acked", "precommitted", "committed", "validated"] as const) {
      expect(canTransition(s, "failed")).toBe(true);
    }
  });
});
