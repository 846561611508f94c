import type { Failure } from "../../shared/errors.ts";
import type { TaskView } from "../../shared/views.ts";

// What the router sends to a SessionQueue for one embedding job (typed RPC) and gets back.

export interface EmbedRequest {
  /** 1–16 texts (the `embed` frame's bound), checked at the route. */
  texts: string[];
  /** The embedding model; absent: the session's `embedding_model`. */
  model?: string;
  /** Caps the miners asked below the session's redundancy. */
  max_miners?: number;
  timeout_s?: number;
  /** Owner of the calling API key (the session's ownership rule applies). */
  owner: string;
}

/** The finished job's view, with its agreed vectors (`task.embedding.vectors`); a failure with the job when there was one. */
export type EmbedOutcome = { ok: true; task: TaskView } | { ok: false; error: Failure; task?: TaskView };
