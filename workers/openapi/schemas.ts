import { z } from "zod";
import { ERROR_STATUS, type ErrorCode } from "../../shared/errors.ts";

// The error answers as zod schemas, for the document only: the codes come from shared/errors.ts, so a new code
// is documented with no edit here.

const CODES = Object.keys(ERROR_STATUS) as [ErrorCode, ...ErrorCode[]];

/** Every REST error (middleware/errors.ts): the router's request id and `{code, message, details}`. */
export const ErrorEnvelope = z.object({
  request_id: z.string().nullable().describe("The X-Request-ID of the request"),
  error: z.object({
    code: z.enum(CODES),
    message: z.string(),
    details: z.unknown().describe("Per code: e.g. `[{path, message}]` for invalid_request"),
  }),
});

/** Errors under /openai/v1, in OpenAI's shape (gateway/errors.ts maps the router's). */
export const OpenAIErrorEnvelope = z.object({
  error: z.object({
    message: z.string(),
    type: z.string().describe("invalid_request_error, authentication_error, permission_error, not_found_error, rate_limit_error, …"),
    param: z.string().nullable(),
    code: z.string().nullable(),
  }),
});
