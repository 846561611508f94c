import { describe, expect, it } from "vitest";
import { RESERVATION_TTL_MS } from "../../durable-objects/session-queue/open-tasks.ts";
import { MAX_OPEN_RESERVATIONS, SealedReservations, sealedRefusal } from "../../durable-objects/session-queue/sealed-reservations.ts";
import type { SessionConfig } from "../../shared/views.ts";

// The client-sealed reservations a SessionQueue keeps in memory: one token per id, usable once, a wrong token
// burns nothing, lapsed after the ids' TTL, at most MAX_OPEN_RESERVATIONS outstanding.

describe("SealedReservations", () => {
  it("takes a reservation once, with its own token only", () => {
    const r = new SealedReservations();
    const t0 = 1_000_000;
    const a = r.bind(7, t0);
    const b = r.bind(8, t0);
    expect(a.token).toMatch(/^[0-9a-f]{32}$/);
    expect(a.token).not.toBe(b.token);
    expect(a.expires_at).toBe(t0 + RESERVATION_TTL_MS);
    expect(r.take(7, b.token, t0)).toBe(false); // another id's token
    expect(r.take(7, "0".repeat(32), t0)).toBe(false); // a guess
    expect(r.take(9, a.token, t0)).toBe(false); // an id never reserved
    expect(r.take(7, a.token, t0)).toBe(true); // the guesses burned nothing
    expect(r.take(7, a.token, t0)).toBe(false); // once
    expect(r.size).toBe(1);
  });

  it("lapses after the ids' TTL and makes room again", () => {
    const r = new SealedReservations();
    const t0 = 5_000_000;
    const first = r.bind(1, t0);
    for (let i = 2; i <= MAX_OPEN_RESERVATIONS; i++) r.bind(i, t0 + 1000);
    expect(r.hasRoom(t0 + 2000)).toBe(false);
    expect(r.take(1, first.token, t0 + RESERVATION_TTL_MS)).toBe(false); // lapsed
    expect(r.hasRoom(t0 + RESERVATION_TTL_MS)).toBe(true); // the lapsed one left
    expect(r.size).toBe(MAX_OPEN_RESERVATIONS - 1);
    expect(r.hasRoom(t0 + 1000 + RESERVATION_TTL_MS)).toBe(true);
    expect(r.size).toBe(0);
  });

  it("says why a session gives none", () => {
    const base = { id: "s1" } as SessionConfig;
    expect(sealedRefusal({ ...base, owner: "*" }).code).toBe("invalid_request");
    expect(sealedRefusal({ ...base, owner: "acme" })).toMatchObject({ code: "rate_limited" });
  });
});
