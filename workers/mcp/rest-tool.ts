import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult, ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import type { Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { callRest, type RestCall } from "../lib/rest-call.ts";
import { outputOf, restResult } from "./result.ts";

// One tool = one REST request through callRest, as the caller: auth, tenancy, validation, rate limits and error
// codes are the route's. Input schemas are the REST zod schemas (imported, never copied) plus `payment_proof`.

/** Every tool takes a payment receipt as an argument, for clients that cannot set headers (forwarded as `X-PAYMENT`). */
export const PAYMENT = {
  payment_proof: z
    .string()
    .min(1)
    .max(16_384)
    .optional()
    .describe(
      'An x402 payment (base64 JSON, what the X-PAYMENT header carries; or pass it in _meta["x402/payment"]): the call then goes to the route\'s x402 variant where one exists (completions v1, delegate and validate v1/v2, factcheck) and is paid by it',
    ),
};

/** A REST body schema with `payment_proof` added (refinements kept: `safeExtend`). */
export const withPayment = <Shape extends z.ZodRawShape>(schema: z.ZodObject<Shape>) =>
  // No REST body has a `payment_proof` field, so the extension cannot clash (the generic cannot show it).
  schema.safeExtend(PAYMENT as never) as unknown as z.ZodObject<Shape & typeof PAYMENT>;

/**
 * The arguments without `payment_proof`: what the REST route gets as its body; and the payment, from
 * `payment_proof` or MCP's x402 convention `_meta["x402/payment"]` (a payment payload object, sent on as base64 JSON).
 * A paid call goes to the route's x402 variant where it has one (lib/rest-call.ts x402PathOf).
 */
export function restArgs<T extends { payment_proof?: string }>(
  args: T,
  extra?: { _meta?: Record<string, unknown> },
): { body: Omit<T, "payment_proof">; payment?: string } {
  const { payment_proof, ...body } = args;
  const meta = extra?._meta?.["x402/payment"];
  const fromMeta = meta && typeof meta === "object" ? btoa(JSON.stringify(meta)) : typeof meta === "string" ? meta : undefined;
  return { body, payment: payment_proof ?? fromMeta };
}

/** MCP's x402 convention: the settlement (PAYMENT-RESPONSE) in the result's `_meta["x402/payment-response"]`. */
export function withPaymentMeta(result: CallToolResult, res: Response): CallToolResult {
  const header = res.headers.get("payment-response");
  if (!header) return result;
  try {
    return { ...result, _meta: { ...result._meta, "x402/payment-response": JSON.parse(atob(header)) } };
  } catch {
    return result;
  }
}

export interface RestToolDef<S extends z.ZodObject> {
  name: string;
  title: string;
  description: string;
  input: S;
  /** Main fields of the REST answer (documentation for clients; all optional in the output schema). */
  output: z.ZodRawShape;
  annotations?: ToolAnnotations;
  /** The REST request for validated arguments (payment_proof already removed). */
  request: (args: Omit<z.output<S>, "payment_proof">) => Omit<RestCall, "payment" | "signal">;
}

export function registerRestTool<S extends z.ZodObject>(server: McpServer, c: Context<AppEnv>, def: RestToolDef<S>): void {
  server.registerTool(
    def.name,
    {
      title: def.title,
      description: def.description,
      inputSchema: def.input,
      outputSchema: outputOf(def.output),
      annotations: def.annotations,
    },
    // The SDK's generic callback type cannot follow a generic schema; the arguments are S's output.
    (async (args: z.output<S> & { payment_proof?: string }, extra: { signal: AbortSignal; _meta?: Record<string, unknown> }) => {
      const { body, payment } = restArgs(args, extra);
      const res = await callRest(c, { ...def.request(body as Omit<z.output<S>, "payment_proof">), payment, signal: extra.signal });
      return withPaymentMeta(await restResult(res), res);
    }) as never,
  );
}

/** A path segment from a validated id (ids are already restricted to URL-safe characters; encoding is belt and braces). */
export const seg = (v: string | number) => encodeURIComponent(String(v));
