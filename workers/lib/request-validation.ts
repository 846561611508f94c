import type { ValidationTargets } from "hono/types";
import { validator } from "hono-openapi";
import type { z } from "zod";
import { ApiError } from "./api-error.ts";

// zod at the route edge: what fails a schema is a 400 `invalid_request` with field details `[{path, message}]`.
// The wrappers are hono-openapi's validator (zod through Standard Schema), so the schema a route validates with
// is also the schema /openapi.json shows for it (workers/openapi/): a route cannot be validated and undocumented.

/** A validation issue as zod and Standard Schema report it. */
interface Issue {
  readonly message: string;
  readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>;
}

/** Field-level details from a zod (or Standard Schema) failure: `[{path, message}]`. */
export function issues(error: { readonly issues: readonly Issue[] }): { path: string; message: string }[] {
  return error.issues.map((i) => ({
    path: (i.path ?? []).map((p) => String(typeof p === "object" ? p.key : p)).join(".") || "(body)",
    message: i.message,
  }));
}

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ApiError("invalid_request", `${what} is invalid`, issues(parsed.error));
  return parsed.data as z.output<T>;
}

/** A body built inside the router (the hosted entry's completion) checked as a client's JSON body would be. */
export const parseBody = <T extends z.ZodType>(schema: T, value: unknown) => parse(schema, value, "request body");

const WHAT = { json: "request body", param: "path parameter", query: "query" } as const;

type Target = keyof typeof WHAT & keyof ValidationTargets;
const validators = new WeakMap<object, { target: Target; schema: z.ZodType }>();

/** The target and zod schema a validator middleware checks (for the OpenAPI test), or undefined. */
export const validation = (handler: object) => validators.get(handler);

/** The validator of `target`: a failure throws the house's ApiError (one onError answers it), never the library's 400. */
function validate<T extends z.ZodType, K extends Target>(target: K, schema: T) {
  const middleware = validator(target, schema, (result) => {
    if (!result.success) throw new ApiError("invalid_request", `${WHAT[target]} is invalid`, issues({ issues: result.error }));
  });
  validators.set(middleware, { target, schema });
  return middleware;
}

export const jsonBody = <T extends z.ZodType>(schema: T) => validate("json", schema);

export const params = <T extends z.ZodType>(schema: T) => validate("param", schema);

export const query = <T extends z.ZodType>(schema: T) => validate("query", schema);
