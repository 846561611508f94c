import { z } from "zod";
import { DISAGREEMENT_POLICIES, STRATEGIES, WEIGHT_BY } from "./aggregation.ts";
import { SESSION_ID } from "./schemas.ts";

// Request bodies of delegate, validate and factcheck (field names as Cortensor clients send them).

const SessionId = z.union([
  z.string().regex(SESSION_ID, "session ids are 1–64 letters, digits, '_' or '-'"),
  z.number().int().nonnegative().transform(String),
]);
/** Free-form material (strings or JSON); it reaches the model as text. */
const Material = z.union([z.string().max(262_144), z.record(z.string(), z.unknown()), z.array(z.unknown())]);
const Metadata = z.record(z.string(), z.unknown());

/** Options every work request may carry. */
const Common = {
  session_id: SessionId.optional(),
  /** Seconds until a replica's task fails with `timeout` (the router answers `timeout` then too). */
  timeout: z.number().positive().max(300).optional(),
  client_reference: z.string().max(256).optional(),
};

/** Decoding options for delegated work (greedy by default, so the replicas of a session agree exactly). */
const Generation = {
  max_tokens: z.number().int().min(1).max(4096).default(128),
  temperature: z.number().min(0).max(2).default(0),
  top_p: z.number().gt(0).max(1).default(1),
  top_k: z.number().int().min(0).max(1000).default(0),
  seed: z
    .number()
    .int()
    .min(0)
    .max(2 ** 31 - 1)
    .optional(),
};

export const Consensus = z
  .object({
    replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]).default(3),
    session_pool: z.array(SessionId).min(1).max(16).optional(),
    strategy: z.enum(STRATEGIES).default("majority"),
    disagreement_policy: z.enum(DISAGREEMENT_POLICIES).default("best_effort"),
    /** `weighted` only: what a replica's miners weigh. */
    weight_by: z.enum(WEIGHT_BY).default("reputation"),
    /** `median_of_means` only: how far from the result (score scale 0–1, or the outputs' own unit) a replica still agrees. */
    tolerance: z.number().min(0).max(1e9).optional(),
  })
  .strict();
export type Consensus = z.infer<typeof Consensus>;
/** v1/v2: one replica, no fan-out. */
export const SINGLE: Consensus = { replicas: 1, strategy: "majority", disagreement_policy: "best_effort", weight_by: "reputation" };

export const DelegateV1 = z.object({
  ...Common,
  ...Generation,
  task_request_input: z.string().min(1, "task_request_input must not be empty").max(262_144),
  task_domain: z.string().max(256).optional(),
  task_type: z.string().max(256).optional(),
  task_result_output: z.string().max(262_144).optional(),
  evaluation_mode: z.string().max(64).optional(),
});
export type DelegateV1 = z.infer<typeof DelegateV1>;

const Execution = z
  .object({
    max_tokens: Generation.max_tokens.optional(),
    temperature: Generation.temperature.optional(),
    top_p: Generation.top_p.optional(),
    top_k: Generation.top_k.optional(),
    seed: Generation.seed,
    timeout: z.number().positive().max(300).optional(),
  })
  .catchall(z.unknown());

export const DelegateV2 = z.object({
  ...Common,
  objective: z.string().min(1, "objective must not be empty").max(65_536),
  input: Material.optional(),
  execution: Execution.default({}),
  policy: Material.optional(),
  tools: z.array(z.unknown()).max(64).optional(),
  workflow: Material.optional(),
  metadata: Metadata.optional(),
});
export type DelegateV2 = z.infer<typeof DelegateV2>;

export const DelegateV3 = DelegateV2.extend({
  consensus: Consensus.default({ replicas: 3, strategy: "majority", disagreement_policy: "best_effort", weight_by: "reputation" }),
});
export type DelegateV3 = z.infer<typeof DelegateV3>;

export const ValidateV1 = z.object({
  ...Common,
  task_request_input: z.string().min(1, "task_request_input must not be empty").max(262_144),
  task_result_output: z.string().max(262_144),
  evaluation_mode: z.string().max(64).default("standard"),
  task_domain: z.string().max(256).optional(),
  task_type: z.string().max(256).optional(),
});
export type ValidateV1 = z.infer<typeof ValidateV1>;

export const ValidateV2 = z.object({
  ...Common,
  claim: Material,
  policy: Material.optional(),
  context: Material.optional(),
  actor: z.union([z.string().max(256), Metadata]).optional(),
  metadata: Metadata.optional(),
});
export type ValidateV2 = z.infer<typeof ValidateV2>;

export const ValidateV3 = ValidateV2.extend({
  consensus: Consensus.default({ replicas: 3, strategy: "majority", disagreement_policy: "best_effort", weight_by: "reputation" }),
});
export type ValidateV3 = z.infer<typeof ValidateV3>;

export const GroundingDocument = z.union([
  z
    .string()
    .min(1)
    .max(65_536)
    .transform((content) => ({ content })),
  z.object({ title: z.string().max(512).optional(), url: z.string().max(2048).optional(), content: z.string().min(1).max(65_536) }),
]);
export type GroundingDocument = { title?: string; url?: string; content: string };

export const Factcheck = z.object({
  ...Common,
  claim: z.string().min(1, "claim must not be empty").max(65_536),
  mode: z.enum(["standard", "realtime"]).default("standard"),
  /** Grounding for realtime mode (else the configured retriever is asked). */
  documents: z.array(GroundingDocument).max(16).optional(),
  context: Material.optional(),
  /** Replicas in the mode's session (1 by default), aggregated like v3 validate. */
  consensus: Consensus.extend({ replicas: z.union([z.literal(1), z.literal(3), z.literal(5)]).default(1) }).optional(),
  metadata: Metadata.optional(),
});
export type Factcheck = z.infer<typeof Factcheck>;
