// edge-inference-sdk: a typed client for the edge inference network's router.
//
//   import { EdgeClient } from "edge-inference-sdk";
//   const client = new EdgeClient({ baseUrl: "http://127.0.0.1:8787", apiKey: "dev-key", verify: true });
//   const answer = await client.completions.create({ prompt: "Hello", max_tokens: 16 });
//   for await (const token of client.completions.stream({ prompt: "Hello" }).tokens()) process.stdout.write(token);

export type { ErrorCode } from "../../shared/errors.ts";
export { verifyReceipt } from "../../shared/receipt.ts";
export { commitmentHash, depositTypedData, precommitTypedData, resultHash, type SigningDomain } from "../../shared/signing.ts";
export { type CallOptions, type CompletionOptions, type CompletionStream, EdgeClient, type EdgeClientOptions } from "./client.ts";
export { EdgeApiError, EdgeError, EdgeNetworkError, VerificationError } from "./errors.ts";
export type { RetryOptions } from "./http.ts";
export type * from "./types.ts";
export { type TrustAnchor, type VerificationReport, type VerifyOptions, verifyEvidence } from "./verify.ts";
