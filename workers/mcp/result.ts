import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";

// Tool results from REST answers. A 2xx body becomes `structuredContent` plus the same JSON as text; anything else
// becomes `isError: true` with the router's error `{code, message, details}`, structured and as text, so a client
// that reads only text still sees the code.

type Json = Record<string, unknown>;

/** The router's error as a tool result carries it. */
export const RouterError = z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() });
export type RouterError = z.infer<typeof RouterError>;

/**
 * A tool's output schema: the fields named (all optional, since an error result carries `error` instead) and
 * anything else the REST body holds. It documents the result for clients; the REST route owns the shape.
 */
export function outputOf(shape: z.ZodRawShape) {
  const optional = Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, (v as z.ZodType).optional()]));
  const base = { http_status: z.number().optional(), request_id: z.string().optional(), error: RouterError.nullable().optional() };
  return z.looseObject({ ...base, ...optional });
}

export function okResult(body: Json): CallToolResult {
  return { content: [{ type: "text", text: JSON.stringify(body) }], structuredContent: body };
}

export function errorResult(status: number, error: RouterError, requestId?: string): CallToolResult {
  const body = { http_status: status, ...(requestId ? { request_id: requestId } : {}), error };
  return {
    isError: true,
    content: [{ type: "text", text: `${error.code}: ${error.message}\n${JSON.stringify(body)}` }],
    structuredContent: body,
  };
}

/** The router's error envelope `{request_id, error}` from a REST body, or a generic one for the status. */
export function errorOf(status: number, body: unknown): { error: RouterError; requestId?: string } {
  const parsed = z.object({ request_id: z.string().nullish(), error: RouterError }).safeParse(body);
  if (parsed.success) return { error: parsed.data.error, requestId: parsed.data.request_id ?? undefined };
  return { error: { code: "internal_error", message: `the router answered HTTP ${status} without an error body` } };
}

/** A whole (non-streamed) REST answer as a tool result. */
export async function restResult(res: Response): Promise<CallToolResult> {
  const body: unknown = await res.json().catch(() => null);
  if (res.ok && body !== null && typeof body === "object" && !Array.isArray(body)) return okResult(body as Json);
  const { error, requestId } = errorOf(res.status, body);
  return errorResult(res.status, error, requestId);
}
