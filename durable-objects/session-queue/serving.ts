import type { ModelContext } from "../../shared/api.ts";
import type { Failure } from "../../shared/errors.ts";
import type { SessionConfig } from "../../shared/views.ts";
import { contextFor } from "../miner-credentials.ts";
import type { MinerSocket } from "../miner-sockets.ts";
import { contextFailure } from "./context.ts";
import { type DeadlinePolicy, deadlineFailure } from "./fair-deadlines.ts";
import type { SubmitRequest } from "./rpc.ts";

// Work a session refuses at once instead of letting it wait for its deadline: no miner that could serve it
// (every connected one benched, and none in the pool either: 503 `no_miner_available`), a prompt that fits
// no serving miner's context (400 `context_length_exceeded`, session-queue/context.ts), or a client deadline no
// serving miner could meet (400 `deadline_too_short`, session-queue/fair-deadlines.ts).

export type PoolServing = (model: string) => Promise<{ miners: number; contexts: (ModelContext | null)[] }>;

/** `miners`: the session's connected miners that are not benched; the pool is asked only when there are none. */
export async function servingFailure(
  config: SessionConfig,
  req: SubmitRequest,
  miners: readonly MinerSocket[],
  pool: PoolServing,
  deadlines: DeadlinePolicy,
): Promise<Failure | null> {
  let contexts = miners.map((m) => contextFor(m.claims.contexts, config.model));
  if (miners.length === 0) {
    const serving = await pool(config.model);
    if (serving.miners === 0) {
      return {
        code: "no_miner_available",
        message: `no miner serves model ${config.model} (none is connected, or every one is benched)`,
        details: { model: config.model },
      };
    }
    contexts = serving.contexts;
  }
  return (
    contextFailure(req, config.model, contexts) ??
    deadlineFailure(
      config,
      req,
      miners.map((m) => m.claims),
      deadlines,
    )
  );
}
