// Limits of MCP sessions that clients see (durable-objects/mcp-session.ts enforces them; the README lists them).

export type McpSessionKind = "streamable" | "legacy";

/** Idle time after which a session expires: no request (Streamable HTTP) or no POST (legacy) for this long. */
export const MCP_IDLE_MS: Record<McpSessionKind, number> = { streamable: 60 * 60_000, legacy: 10 * 60_000 };
/** A legacy session (its stream) lives at most this long; the client's EventSource reconnects for a new one. */
export const MCP_LEGACY_MAX_AGE_MS = 60 * 60_000;
/** Open legacy streams per API key owner; one more answers 429 `mcp_stream_limit`. */
export const MCP_MAX_STREAMS_PER_OWNER = 8;
/** The largest JSON-RPC message written on a legacy stream (a larger response becomes a JSON-RPC error). */
export const MCP_MAX_FRAME_BYTES = 4 * 1024 * 1024;
