import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import type { UsageMeter } from "../../durable-objects/usage-meter.ts";
import app from "../../workers/index.ts";
import { env, ORIGIN } from "./helpers.ts";

// The Worker called in-process with an env of the test's own (other keys, a counted or failing binding), and the
// work its answer left in waitUntil awaited before the test reads anything.

/** `method path` with `key`'s bearer (and `body` as JSON) against the Worker with `vars` as its env. */
export async function callApp(vars: Env, method: string, path: string, body?: unknown, key = "dev-key"): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(
    new Request(`${ORIGIN}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    }),
    vars,
    ctx,
  );
  await waitOnExecutionContext(ctx);
  return res;
}

/** `env` whose UsageMeter stubs are counted (one stub per batch sent), each wrapped or replaced by `stub` if given. */
export function countingMeters(stub?: (real: DurableObjectStub<UsageMeter>) => unknown): { env: Env; batches: () => number } {
  let batches = 0;
  const ns = env.USAGE_METER;
  const USAGE_METER = {
    idFromName: (name: string) => ns.idFromName(name),
    get: (id: DurableObjectId) => {
      batches++;
      return stub ? stub(ns.get(id)) : ns.get(id);
    },
  };
  return { env: { ...env, USAGE_METER } as unknown as Env, batches: () => batches };
}
