import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { POOL_MIGRATIONS } from "../../durable-objects/reputation.ts";
import { migrate } from "../../durable-objects/session-schema.ts";
import { env } from "./helpers.ts";

// A pool stored before reputation existed (its tables made by CREATE TABLE IF NOT EXISTS, no _migrations
// table) must upgrade in place: its miners keep their rows and gain stake and reputation columns.
describe("NodePool storage migrations", () => {
  it("upgrades a pre-versioning pool in place, keeping its miners", async () => {
    const stub = env.NODE_POOL.get(env.NODE_POOL.idFromName("legacy-pool"));
    const row = await runInDurableObject(stub, (_pool, state) => {
      const sql = state.storage.sql;
      // Everything later migrations make or alter goes, as in a pool that predates them.
      for (const t of ["_migrations", "ledger", "miners", "sessions", "session_claims", "miner_channels"])
        sql.exec(`DROP TABLE IF EXISTS ${t}`);
      sql.exec(POOL_MIGRATIONS[0][0]); // the old miners table
      sql.exec(`INSERT INTO miners (address, models, device, capacity, registered_at) VALUES ('0xold', '["m"]', 'cpu', 2, 1)`);
      migrate(sql, POOL_MIGRATIONS);
      migrate(sql, POOL_MIGRATIONS); // idempotent
      const versions = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM _migrations`).one().n;
      const ledger = sql.exec<{ n: number }>(`SELECT COUNT(*) AS n FROM ledger`).one().n;
      return { ...sql.exec(`SELECT address, capacity, stake, slashed, tasks, agreed FROM miners`).one(), versions, ledger };
    });
    expect(row).toEqual({
      address: "0xold",
      capacity: 2,
      stake: 0,
      slashed: 0,
      tasks: 0,
      agreed: 0,
      versions: POOL_MIGRATIONS.length,
      ledger: 0,
    });
  });
});
