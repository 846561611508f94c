import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { ERROR_STATUS, type ErrorCode, type Failure, type JsonValue } from "../../shared/errors.ts";

/** The one exception routes throw; `onError` turns it into `{request_id, error: {code, message, details}}`. */
export class ApiError extends HTTPException {
  readonly code: ErrorCode;
  readonly details: JsonValue | undefined;

  constructor(code: ErrorCode, message: string, details?: JsonValue) {
    super(ERROR_STATUS[code] as ContentfulStatusCode, { message });
    this.code = code;
    this.details = details;
  }

  static from(failure: Failure): ApiError {
    return new ApiError(failure.code, failure.message, failure.details);
  }
}
