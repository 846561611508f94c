import { TEXT_BYTES_PER_TOKEN } from "../../shared/protocol.ts";
import { replicaIsLive } from "../../shared/task-state.ts";
import type { ReplicaOutcome } from "../reputation.ts";
import { completionBound, utf8Bytes } from "./miner-input.ts";
import { outcomeEntry, type Stamp } from "./outcomes.ts";
import type { TaskRead } from "./reads.ts";
import { type OpenTask, type Replica, replicasOf } from "./task.ts";

// A task's owner cancels it (POST /api/v1/tasks/:sid/:tid/cancel). The task fails `task_cancelled` at once, its
// waiters are answered and its live replicas told to stop, blaming nobody. What it costs is what the router can
// check was done (README, "Cancelling a task"): commits already in (held at the barrier or revealed), each
// checked against its miner's signed precommitment and the task's bounds, charge the fewest tokens any of them
// reports, shared by those replicas; a streaming client pays at least for the text it already holds. Work the
// router cannot check is not billed: a miner could claim it without having done it.

/** Tokens a commit in proves: its usage, prompt capped at the prompt's bytes, completion at the task's bound. */
function proven(task: OpenTask, r: Replica): number | null {
  const usage = r.held?.msg.usage ?? (r.state === "committed" ? r.usage : undefined);
  if (!usage) return null;
  return Math.min(usage.prompt_tokens, task.promptBytes) + Math.min(usage.completion_tokens, completionBound(task.assign.params));
}

export interface CancelBill {
  /** Tokens the session is charged (never above the task's reservation). */
  charged: number;
  /** The failure message the task keeps. */
  message: string;
  /** Ledger outcomes of the replicas paid for their work (`cancelled`: a reward, no reputation either way). */
  paid: ReplicaOutcome[];
}

/**
 * What cancelling `task` now costs, given the text its streaming client already received (`sent`). Paid: the
 * replicas whose commit is in; when none is, the live replicas that streamed the text the client holds, for at
 * least ⌈bytes / TEXT_BYTES_PER_TOKEN⌉ tokens (no token of any answer is longer, so the client holds at least that).
 */
export function cancelBill(task: OpenTask, sent: string, stamp: Stamp): CancelBill {
  const committed = replicasOf(task).flatMap((r) => {
    const tokens = proven(task, r);
    return tokens === null ? [] : [{ r, tokens }];
  });
  const delivered = sent ? Math.ceil(utf8Bytes(sent) / TEXT_BYTES_PER_TOKEN) : 0;
  const streamers = sent ? replicasOf(task).filter((r) => replicaIsLive(r.state) && r.streamed.startsWith(sent)) : [];
  const payees = committed.length ? committed.map((c) => c.r) : streamers;
  const least = committed.length ? Math.min(...committed.map((c) => c.tokens)) : 0;
  const charged = payees.length ? Math.min(Math.max(least, delivered), task.reservedTokens) : 0;
  const share = payees.length ? Math.floor(charged / payees.length) : 0;
  const reason = committed.length ? "committed before the task's owner cancelled it" : "streamed what the client held when it cancelled";
  return {
    charged,
    message: `the task's owner cancelled it (charged ${charged} tokens for work its miners had proved)`,
    paid: payees.map((r) => outcomeEntry(task, r, "cancelled", reason, stamp, share)),
  };
}

/**
 * The answer to a cancel of a task that is no longer open: its view again when it was cancelled (a repeated
 * cancel is not an error), 409 `task_finished` when it ended otherwise; a failed read (404) as it is.
 */
export function cancelAnswer(read: TaskRead): TaskRead {
  if (!read.ok || read.task.error?.code === "task_cancelled") return read;
  return {
    ok: false,
    error: {
      code: "task_finished",
      message: `task ${read.task.session_id}/${read.task.task_id} already finished (${read.task.status})`,
      details: { status: read.task.status, error: read.task.error?.code ?? null },
    },
  };
}
