import type { Failure } from "../../shared/errors.ts";
import type { GenerationParams, PromptSpec } from "../../shared/generation.ts";
import type { PayloadDescriptor } from "../../shared/payloads.ts";
import type { TaskView } from "../../shared/views.ts";

// What the router sends to a SessionQueue and gets back (typed RPC): one completion in, its outcome out.

/** What the router passes for one completion. */
export interface SubmitRequest {
  input: PromptSpec;
  params: Omit<GenerationParams, "seed"> & { seed?: number };
  stream: boolean;
  timeout_s?: number;
  precommit_timeout_s?: number;
  client_reference?: string;
  model?: string;
  /** Caps the replicas of this task below the session's redundancy. */
  max_miners?: number;
  /** Owner of the calling API key; sessions serve their owner (the default session, owner `*`, serves all). */
  owner: string;
  /** v2/v3: the prompt is off-chain and/or encrypted (`input.prompt` is then empty); see shared/payloads.ts. */
  payload?: PayloadDescriptor;
  /** v2/v3: an id from reserveTaskId(), under which the router already stored the task's payload. */
  task_id?: number;
  /** v2/v3 off-chain: UTF-8 bytes of the prompt as the model reads it (session-queue/context.ts), from the router. */
  prompt_read_bytes?: number;
  /** Private tasks: the miners allowlisted for the task key when it was submitted, the only ones that may verify it. */
  verify_validators?: string[];
}

export type SubmitOutcome =
  | { ok: true; stream: false; task: TaskView }
  | { ok: true; stream: true; task_id: string; model: string; created_at: number; events: ReadableStream<Uint8Array> }
  | { ok: false; error: Failure; task?: TaskView };

/** NDJSON events on a streaming submit. */
export type StreamEvent = { t: "token"; text: string } | { t: "done"; task: TaskView } | { t: "error"; error: Failure; task: TaskView };
