import { validator } from "hono/validator";
import type { z } from "zod";
import { ApiError } from "./api-error.ts";

// zod at the route edge: what fails a schema is a 400 `invalid_request` with field details `[{path, message}]`.

/** Field-level details from a zod failure: `[{path, message}]`. */
export function issues(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.join(".") || "(body)", message: i.message }));
}

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new ApiError("invalid_request", `${what} is invalid`, issues(parsed.error));
  return parsed.data as z.output<T>;
}

/** A body built inside the router (the hosted entry's completion) checked as a client's JSON body would be. */
export const parseBody = <T extends z.ZodType>(schema: T, value: unknown) => parse(schema, value, "request body");

export const jsonBody = <T extends z.ZodType>(schema: T) => validator("json", (value) => parse(schema, value, "request body"));

export const params = <T extends z.ZodType>(schema: T) => validator("param", (value) => parse(schema, value, "path parameter"));

export const query = <T extends z.ZodType>(schema: T) => validator("query", (value) => parse(schema, value, "query"));
