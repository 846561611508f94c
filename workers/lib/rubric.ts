import type { GenerationConstraint } from "../../shared/generation.ts";

// Rubric prompts for validation and fact-checking, the grammar miners answer them in (constrained decoding,
// see miner-agent/src/model/constrained.ts) and the parser for that answer. Pure: no Worker APIs.

export const VALIDATE_VERDICTS = ["VALID", "INVALID", "RETRY", "NEEDS_SPEC"] as const;
export type ValidateVerdict = (typeof VALIDATE_VERDICTS)[number];
export const FACTCHECK_VERDICTS = ["SUPPORTED", "REFUTED", "UNVERIFIABLE"] as const;
export type FactcheckVerdict = (typeof FACTCHECK_VERDICTS)[number];

/** Scores and confidences are whole numbers 0–10 in the model's answer, reported as 0–1. */
const SCALE = Array.from({ length: 11 }, (_, i) => String(i));

/**
 * The answer grammar: `VERDICT: <label>\nSCORE: <0-10>\nCONFIDENCE: <0-10>`. Only the labels and the score
 * digits can appear at those positions; the model's own logits choose among them.
 */
export function RUBRIC_CONSTRAINT(labels: readonly string[]): GenerationConstraint {
  return {
    segments: [
      { literal: "VERDICT: " },
      { choice: [...labels] },
      { literal: "\nSCORE: " },
      { choice: SCALE },
      { literal: "\nCONFIDENCE: " },
      { choice: SCALE },
    ],
  };
}

/** Tokens the answer may take, for the deposit reservation (byte-level tokens: at most one per byte). */
export function rubricMaxTokens(labels: readonly string[]): number {
  return "VERDICT: \nSCORE: 10\nCONFIDENCE: 10".length + Math.max(...labels.map((l) => l.length)) + 1;
}

/** Generation parameters of a rubric task: greedy (same verdict on every honest miner) under the grammar. */
export function rubricParams(labels: readonly string[]) {
  return {
    max_tokens: rubricMaxTokens(labels),
    temperature: 0,
    top_p: 1,
    top_k: 0,
    presence_penalty: 0,
    frequency_penalty: 0,
    stop: [],
    constraint: RUBRIC_CONSTRAINT(labels),
  };
}

export interface RubricAnswer<V extends string = string> {
  verdict: V;
  /** 0–1. */
  score: number;
  /** The model's own confidence, 0–1. */
  confidence: number;
}

/** Parses a miner's answer; null when it does not follow the grammar (an old or dishonest miner). */
export function parseRubricOutput<V extends string>(text: string, labels: readonly V[]): RubricAnswer<V> | null {
  const m = /^VERDICT: ([A-Z_]+)\nSCORE: (\d{1,2})\nCONFIDENCE: (\d{1,2})$/.exec(text);
  if (!m || !(labels as readonly string[]).includes(m[1])) return null;
  const score = Number(m[2]);
  const confidence = Number(m[3]);
  if (score > 10 || confidence > 10) return null;
  return { verdict: m[1] as V, score: score / 10, confidence: confidence / 10 };
}

const utf8 = new TextEncoder();
const bytesOf = (text: string) => utf8.encode(text).length;

/**
 * Caps one piece of material at `max` UTF-8 bytes (byte-level BPE never makes more tokens than bytes, so a
 * byte budget bounds the prompt's tokens whatever the script); a cut piece ends with " …".
 */
export function clip(text: string, max: number): string {
  const bytes = utf8.encode(text);
  if (bytes.length <= max) return text;
  const cut = new TextDecoder().decode(bytes.slice(0, Math.max(0, max - 4))).replace(/\uFFFD+$/, "");
  return `${cut} …`;
}

export function asText(v: unknown): string {
  if (v == null) return "";
  return typeof v === "string" ? v : JSON.stringify(v);
}

const ANSWER_FORM = "Answer as:\nVERDICT: <label>\nSCORE: <0-10>\nCONFIDENCE: <0-10>\n";

/**
 * Shares a byte budget fairly among pieces of material: short pieces keep all they have, long ones split
 * what is left evenly. The budget bounds the material's tokens, so the prompt fits a small model's context
 * (the built-in model has 512 positions; the fixed rubric text takes about 180 tokens of the trained model).
 */
export function fitMaterial(pieces: string[], budget: number): string[] {
  const out = new Array<string>(pieces.length);
  const size = pieces.map(bytesOf);
  const order = pieces.map((_, i) => i).sort((a, b) => size[a] - size[b]);
  let left = budget;
  order.forEach((i, k) => {
    const share = Math.max(8, Math.floor(left / (order.length - k)));
    out[i] = clip(pieces[i], share);
    left -= Math.min(size[i], share);
  });
  return out;
}

export interface ValidateMaterial {
  /** What was asked (v1 task_request_input) or the claim (v2). */
  request: string;
  /** The candidate result (v1 task_result_output); absent for a bare claim. */
  result?: string;
  mode?: string;
  policy?: string;
  context?: string;
  actor?: string;
}

export function validatePrompt(m: ValidateMaterial, budget: number): string {
  const named: [string, string | undefined][] = [
    ["Mode", m.mode && clip(m.mode, 24)],
    ["Policy", m.policy],
    ["Actor", m.actor && clip(m.actor, 32)],
    ["Context", m.context],
    [m.result === undefined ? "Claim" : "Request", m.request],
    ["Result", m.result],
  ];
  const present = named.filter((n): n is [string, string] => n[1] !== undefined);
  const fitted = fitMaterial(
    present.map(([, v]) => v),
    budget,
  );
  return [
    "Validate the candidate. VALID: correct, complete. INVALID: wrong. RETRY: incomplete, redo. NEEDS_SPEC: too ambiguous.",
    "SCORE: quality 0-10. CONFIDENCE: 0-10.",
    ...present.map(([k], i) => `${k}: ${fitted[i]}`),
    ANSWER_FORM,
  ].join("\n");
}

export function factcheckPrompt(claim: string, documents: { title?: string; content: string }[], budget: number): string {
  const titles = documents.map((d) => (d.title ? clip(d.title, 24) : ""));
  const fitted = fitMaterial([claim, ...titles, ...documents.map((d) => d.content)], budget);
  const n = documents.length;
  return [
    n > 0
      ? "Fact-check the claim against the sources. SUPPORTED: they support it. REFUTED: they contradict it. UNVERIFIABLE: unsettled."
      : "Fact-check the claim. SUPPORTED: true. REFUTED: false. UNVERIFIABLE: unsettled.",
    "SCORE: how likely true, 0-10. CONFIDENCE: 0-10.",
    ...documents.map((_, i) => `Source ${i + 1}${titles[i] ? ` (${fitted[1 + i]})` : ""}: ${fitted[1 + n + i]}`),
    `Claim: ${fitted[0]}`,
    ANSWER_FORM,
  ].join("\n");
}
