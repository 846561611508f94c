import { validator } from "hono/validator";
import type { z } from "zod";
import { ApiError } from "./api-error.ts";

/** Field-level details from a zod failure: `[{path, message}]`. */
export function issues(error: z.ZodError): { path: string; message: string }[] {
  return error.issues.map((i) => ({ path: i.path.join(".") || "(body)", message: i.message }));
}

/** zod at the route edge: a JSON body that fails the schema is a 400 `invalid_request` with field details. */
export const jsonBody = <T extends z.ZodType>(schema: T) =>
  validator("json", (value) => {
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new ApiError("invalid_request", "request body is invalid", issues(parsed.error));
    return parsed.data as z.output<T>;
  });

export const params = <T extends z.ZodType>(schema: T) =>
  validator("param", (value) => {
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new ApiError("invalid_request", "path parameter is invalid", issues(parsed.error));
    return parsed.data as z.output<T>;
  });

export const query = <T extends z.ZodType>(schema: T) =>
  validator("query", (value) => {
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new ApiError("invalid_request", "query is invalid", issues(parsed.error));
    return parsed.data as z.output<T>;
  });
