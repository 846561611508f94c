import { createMiddleware } from "hono/factory";
import type { AppEnv } from "../env.ts";

// Every request gets an id the router makes (a UUID), in `X-Request-ID` and in every body that names one; it
// is what logs and audit rows are keyed by, so a client cannot choose or collide with it. A client's own
// `X-Request-ID` is only echoed back, bounded and sanitised, in `X-Client-Request-ID`.

const CLIENT_ID_MAX = 128;

/** A client's id as echoed: at most 128 characters of [A-Za-z0-9._:-], else nothing. */
export function clientRequestId(raw: string | undefined): string | null {
  const id = raw?.trim().slice(0, CLIENT_ID_MAX);
  return id && /^[A-Za-z0-9._:-]+$/.test(id) ? id : null;
}

export const requestIdentity = createMiddleware<AppEnv>(async (c, next) => {
  const id = crypto.randomUUID();
  c.set("requestId", id);
  c.header("X-Request-ID", id);
  const client = clientRequestId(c.req.header("X-Request-ID"));
  if (client) c.header("X-Client-Request-ID", client);
  await next();
});
