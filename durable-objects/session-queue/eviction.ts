import type { SessionServerMessage } from "../../shared/protocol.ts";
import type { SessionConfig } from "../../shared/views.ts";
import type { MinerSockets } from "../miner-sockets.ts";
import { workingReplicas } from "./barrier.ts";
import type { MinerLoad } from "./miner-load.ts";
import type { OpenTasks } from "./open-tasks.ts";
import type { Stragglers } from "./stragglers.ts";
import { assignMessage } from "./task.ts";
import type { TaskStore } from "./task-store.ts";

// A SessionQueue that wakes after an eviction or restart rebuilds its work from SQLite: nothing accepted is lost.

/** Open tasks go back in the queue with their live replicas' load; closed tasks with live stragglers are watched again. */
export function restoreTasks(store: TaskStore, config: SessionConfig, open: OpenTasks, stragglers: Stragglers, load: MinerLoad): void {
  for (const { task, consensus } of store.unfinished(config)) {
    if (task.state === "closed") {
      stragglers.restore(task, consensus!);
      continue;
    }
    for (const r of workingReplicas(task)) load.bump(r.miner, 1); // a held commit's miner is done with it
    open.add(task);
  }
}

/**
 * Acks live in memory only, so a restored replica reads `assigned` even if its miner acked: the assign is re-sent
 * over the still-open (hibernated) socket with a fresh ack window, and the miner re-acks it.
 */
export function resendAssigns(open: OpenTasks, sockets: MinerSockets<SessionServerMessage>, ackTimeoutS: number, block: number): void {
  const now = Date.now();
  for (const task of open.values()) {
    for (const r of task.replicas.values()) {
      const ws = r.state === "assigned" ? sockets.socketFor(r.miner) : undefined;
      if (!ws) continue;
      r.ack_deadline = Math.min(task.deadline_at, now + Math.round(ackTimeoutS * 1000));
      sockets.send(ws, assignMessage(task, r, block));
    }
  }
}
