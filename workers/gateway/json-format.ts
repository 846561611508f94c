import { GenerationConstraint } from "../../shared/generation.ts";
import { ApiError } from "../lib/api-error.ts";

// `response_format` as the engine's grammar (shared/generation.ts GenerationConstraint: literals and choices).
// Such a grammar can spell a JSON object whose every value is picked from a known set — `enum`, `const`,
// `boolean`, `null`, and objects of those, nested — so a `json_schema` of that kind is honoured exactly: the
// answer is compact JSON with every property, in schema order, each value one the schema allows. Free text
// (`json_object`, `string` without an enum, numbers without one) cannot be spelt by choices: 400 naming the field.

type Segment = GenerationConstraint["segments"][number];
type Scalar = string | number | boolean | null;

const FIELD = "response_format";
const SCHEMA = `${FIELD}.json_schema.schema`;

function refuse(path: string, why: string): never {
  throw new ApiError("invalid_request", `response_format cannot be honoured: ${why}`, [{ path, message: why }]);
}

/** The JSON texts a property schema allows, or a refusal naming it. */
function valuesOf(s: Record<string, unknown>, path: string): string[] | null {
  const scalar = (v: unknown): v is Scalar => v === null || ["string", "number", "boolean"].includes(typeof v);
  if ("const" in s) return scalar(s.const) ? [JSON.stringify(s.const)] : refuse(path, "const must be a string, number, boolean or null");
  if (Array.isArray(s.enum)) {
    if (!s.enum.every(scalar) || s.enum.length === 0) refuse(path, "enum must list strings, numbers, booleans or null");
    return s.enum.map((v) => JSON.stringify(v));
  }
  if (s.type === "boolean") return ["true", "false"];
  if (s.type === "null") return ["null"];
  if (s.type === "object") return null;
  return refuse(path, "every value must be an enum, a const, a boolean, null, or an object of those (free text cannot be constrained)");
}

/** Nesting and parts past which no schema fits the grammar anyway: a deep or wide one stops early. */
const MAX_DEPTH = 8;
const MAX_PARTS = 96;

/** Appends the grammar of one schema node to `out` (consecutive literals are merged later). */
function compile(s: unknown, path: string, out: Segment[], depth = 0): void {
  if (depth > MAX_DEPTH || out.length > MAX_PARTS) refuse(SCHEMA, "the schema is too large for the network's grammars");
  if (!s || typeof s !== "object" || Array.isArray(s)) refuse(path, "a schema must be an object");
  const node = s as Record<string, unknown>;
  const values = valuesOf(node, path);
  if (values) {
    out.push(values.length === 1 ? { literal: values[0] } : { choice: values });
    return;
  }
  const props = node.properties;
  if (!props || typeof props !== "object" || Object.keys(props).length === 0) refuse(`${path}.properties`, "an object needs properties");
  out.push({ literal: "{" });
  for (const [i, [key, sub]] of Object.entries(props as Record<string, unknown>).entries()) {
    out.push({ literal: `${i ? "," : ""}${JSON.stringify(key)}:` });
    compile(sub, `${path}.properties.${key}`, out, depth + 1);
  }
  out.push({ literal: "}" });
}

/** Merges neighbouring literals and splits them at the grammar's 256-character bound. */
function tidy(segments: Segment[]): Segment[] {
  const merged: Segment[] = [];
  for (const s of segments) {
    const last = merged.at(-1);
    if ("literal" in s && last && "literal" in last) merged[merged.length - 1] = { literal: last.literal + s.literal };
    else merged.push(s);
  }
  return merged.flatMap((s): Segment[] =>
    "literal" in s ? (s.literal.match(/[\s\S]{1,256}/g) ?? []).map((literal) => ({ literal })) : [s],
  );
}

/** The grammar a chat's `response_format` asks for: undefined for text, a constraint for a json_schema of known values. */
export function responseConstraint(format: { type: string; [k: string]: unknown } | undefined): GenerationConstraint | undefined {
  if (!format || format.type === "text") return undefined;
  if (format.type === "json_object")
    refuse(`${FIELD}.type`, "json_object asks for free-form JSON; use json_schema with enum, const or boolean values");
  if (format.type !== "json_schema") refuse(`${FIELD}.type`, `unknown type ${String(format.type).slice(0, 40)}`);
  const spec = format.json_schema as { schema?: unknown } | undefined;
  if (!spec?.schema) refuse(`${FIELD}.json_schema.schema`, "json_schema needs a schema");
  const segments: Segment[] = [];
  compile(spec.schema, SCHEMA, segments);
  const parsed = GenerationConstraint.safeParse({ segments: tidy(segments) });
  if (!parsed.success)
    refuse(SCHEMA, "the schema is too large for the network's grammars (at most 32 parts, 64 values of 64 characters each)");
  return parsed.data;
}
