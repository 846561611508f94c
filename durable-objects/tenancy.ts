import type { Failure } from "../shared/errors.ts";

// Who sees what: the one ownership rule behind every read and write of a session's data (its config and usage,
// tasks, replicas, payloads, keys, allowlists, audits, ledger ids). The SessionQueue applies it to what it
// holds; the router applies it to what lives elsewhere (R2 objects, the pool's catalog and ledger).
//
// - An owned session (owner = an API key's owner name) is its owner's alone: to any other key it does not
//   exist (404 `session_not_found`, the answer an unknown id gets), so its existence is not revealed either.
// - A shared session (owner `*`: the default session and the configured work pools) takes every key's tasks,
//   but each task is its submitter's alone: another key's task is `task_not_found`, and lists, counts and usage
//   show the caller's own tasks only.

/** The owner of a shared session. No API key may have this owner name (lib/credentials.ts refuses it). */
export const SHARED_OWNER = "*";

export const isShared = (session: { owner: string }): boolean => session.owner === SHARED_OWNER;

/** Whether `caller` (an API key's owner name) may see and use the session at all. */
export function seesSession(session: { owner: string }, caller: string): boolean {
  return isShared(session) || session.owner === caller;
}

/**
 * Whether `caller` may see a task and everything of it (prompt, output, hashes, sizes, usage, miners' evidence).
 * `submitter` is the owner that submitted it (null on rows written before owners were recorded: nobody's).
 */
export function seesTask(session: { owner: string }, submitter: string | null, caller: string): boolean {
  if (!isShared(session)) return session.owner === caller;
  return submitter !== null && submitter === caller;
}

export const sessionNotFound = (id: string): Failure => ({ code: "session_not_found", message: `unknown session ${id}` });
export const taskNotFound = (sessionId: string, taskId: string | number): Failure => ({
  code: "task_not_found",
  message: `unknown task ${sessionId}/${taskId}`,
});
