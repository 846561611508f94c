import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { bearerToken } from "../lib/credentials.ts";
import { sameSecret } from "../lib/keys.ts";
import { MIN_ADMIN_SECRET_BYTES } from "../lib/secrets.ts";

// The key admin API (routes/admin.ts): `Authorization: Bearer <ADMIN_SECRET>`, compared in constant time. The
// config guard already refuses to serve without a fit ADMIN_SECRET; this refuses again on its own, so the admin
// API can never be open because a secret is empty or short. A failure is a 401 and counts against the client
// IP's authentication failures (middleware/errors.ts), like any other.

export const adminAuth = createMiddleware<AppEnv>(async (c, next) => {
  const secret = c.env.ADMIN_SECRET ?? "";
  if (new TextEncoder().encode(secret).length < MIN_ADMIN_SECRET_BYTES) {
    throw new ApiError("configuration_error", "the key admin API is off: ADMIN_SECRET is not set (or too short)", {
      variables: ["ADMIN_SECRET"],
    });
  }
  const token = bearerToken(c.req.header("Authorization"));
  if (!token || !(await sameSecret(token, secret)))
    throw new ApiError("unauthorized", "the admin API needs `Authorization: Bearer <ADMIN_SECRET>`");
  await next();
});
