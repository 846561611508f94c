import type { Message } from "@a2a-js/sdk";
import { RequestMalformedError } from "@a2a-js/sdk/errors";
import type { z } from "zod";
import { issues } from "../lib/request-validation.ts";
import { CompletionBody } from "../lib/schemas.ts";
import { DelegateV1, DelegateV2, DelegateV3, Factcheck, ValidateV1, ValidateV2, ValidateV3 } from "../lib/work-schemas.ts";

// The A2A skills and the REST route each one is. A message names its skill (`skill` in its data part, else in
// the message's or the request's metadata; a plain text message is a completion); its data part carries the
// REST body's own fields, checked here with the REST route's own zod schema so a bad message is refused as
// invalid params before a task exists. The REST route checks the same body again when the skill runs.

export const SKILL_IDS = ["completion", "delegate", "validate", "factcheck"] as const;
export type SkillId = (typeof SKILL_IDS)[number];

interface Route {
  path: string;
  schema: z.ZodType;
  /** The field a message's text fills when the data part leaves it out. */
  textField: string;
}

const ROUTES: Record<SkillId, Partial<Record<1 | 2 | 3, Route>>> = {
  completion: { 1: { path: "/api/v1/completions", schema: CompletionBody, textField: "prompt" } },
  delegate: {
    1: { path: "/api/v1/delegate", schema: DelegateV1, textField: "task_request_input" },
    2: { path: "/api/v2/delegate", schema: DelegateV2, textField: "objective" },
    3: { path: "/api/v3/delegate", schema: DelegateV3, textField: "objective" },
  },
  validate: {
    1: { path: "/api/v1/validate", schema: ValidateV1, textField: "task_request_input" },
    2: { path: "/api/v2/validate", schema: ValidateV2, textField: "claim" },
    3: { path: "/api/v3/validate", schema: ValidateV3, textField: "claim" },
  },
  factcheck: { 1: { path: "/api/v1/factcheck", schema: Factcheck, textField: "claim" } },
};

/** One skill invocation: the REST request it makes. */
export interface SkillCall {
  skill: SkillId;
  version: 1 | 2 | 3;
  path: string;
  body: Record<string, unknown>;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** v2 bodies name `objective` (delegate) or `claim` (validate); v3 adds `consensus`. */
function inferVersion(skill: SkillId, data: Record<string, unknown>): 1 | 2 | 3 {
  const v2Field = skill === "delegate" ? "objective" : skill === "validate" ? "claim" : null;
  if (!v2Field || !(v2Field in data)) return 1;
  return "consensus" in data ? 3 : 2;
}

function malformed(message: string, details?: unknown): never {
  throw new RequestMalformedError({
    message,
    metadata: { code: "invalid_request", ...(details === undefined ? {} : { details: JSON.stringify(details) }) },
  });
}

/** The parts a message may carry: text (joined into one string) and at most one JSON-object data part. */
function partsOf(message: Message): { text: string; data: Record<string, unknown> } {
  const texts: string[] = [];
  let data: Record<string, unknown> | null = null;
  for (const part of message.parts ?? []) {
    const content = part.content;
    if (content?.$case === "text") texts.push(content.value);
    else if (content?.$case === "data") {
      if (!isObject(content.value)) malformed("a data part must be a JSON object of the skill's fields");
      if (data) malformed("a message carries at most one data part");
      data = content.value;
    } else malformed("only text and data parts are accepted");
  }
  return { text: texts.join("\n"), data: data ?? {} };
}

/** The skill a message asks for, checked against its REST route's schema; throws invalid params otherwise. */
export function skillCall(message: Message | undefined, requestMetadata?: Record<string, unknown>): SkillCall {
  if (!message) malformed("message is required");
  const { text, data } = partsOf(message);
  const { skill: named, version: askedVersion, ...fields } = data;
  const skill = named ?? message.metadata?.skill ?? requestMetadata?.skill ?? "completion";
  if (typeof skill !== "string" || !(SKILL_IDS as readonly string[]).includes(skill)) {
    malformed(`unknown skill ${JSON.stringify(skill)}: one of ${SKILL_IDS.join(", ")}`);
  }
  const id = skill as SkillId;
  const version = askedVersion ?? inferVersion(id, fields);
  const route = ROUTES[id][version as 1 | 2 | 3];
  if (!route) malformed(`skill ${id} has no version ${JSON.stringify(version)}`);
  const body = { ...fields };
  if (body[route.textField] === undefined && text) body[route.textField] = text;
  const parsed = route.schema.safeParse(body);
  if (!parsed.success) {
    const found = issues(parsed.error);
    malformed(`the ${id} skill's fields are invalid: ${found.map((i) => `${i.path}: ${i.message}`).join("; ")}`, found);
  }
  return { skill: id, version: version as 1 | 2 | 3, path: route.path, body };
}
