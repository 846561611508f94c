import type { Address } from "viem";
import { type RouterIdentity, type SigningDomain, signingDomain } from "../shared/signing.ts";

// Which deployment this router is, from its configuration: ROUTER_NAME, CHAIN_ID and ROUTER_ADDRESS. Every
// miner signature (registration, precommit, off-chain result write) is made for it (shared/signing.ts), so a
// signature one deployment obtained is worth nothing at another. The router refuses to serve with a malformed
// value (workers/middleware/config-guard.ts) rather than sign under a domain nobody meant.

/** The development chain id (the local EVM chain `npm start` will run; Anvil's and Hardhat's default). */
export const DEFAULT_CHAIN_ID = 31337;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

type DeploymentVars = Pick<Env, "ROUTER_NAME" | "ROUTER_ADDRESS" | "CHAIN_ID"> & { ROUTER_ENV?: string };

/** What is wrong with the deployment's identity, one line per variable (empty: fine). */
export function deploymentProblems(env: DeploymentVars): string[] {
  const problems: string[] = [];
  if (!env.ROUTER_NAME?.trim()) problems.push("ROUTER_NAME is empty (it names the router in every signature)");
  if (env.ROUTER_ADDRESS && !ADDRESS.test(env.ROUTER_ADDRESS)) problems.push("ROUTER_ADDRESS is not a 0x-prefixed 20-byte address");
  // Two deployments that keep the default name and chain and no address would share one signing domain, and
  // signatures made for one would verify at the other: in production the address is what tells them apart.
  if (!env.ROUTER_ADDRESS && env.ROUTER_ENV !== "development") {
    problems.push("ROUTER_ADDRESS is empty (in production it binds every miner signature to this deployment)");
  }
  const chain = Number(env.CHAIN_ID);
  if (env.CHAIN_ID && !(Number.isSafeInteger(chain) && chain >= 1)) problems.push("CHAIN_ID is not a positive integer");
  return problems;
}

/** The router's identity as it signs with it; `origin` is the URL origin it answered at (registration only). */
export function routerIdentity(env: DeploymentVars, origin: string): RouterIdentity {
  return {
    name: env.ROUTER_NAME,
    chain_id: env.CHAIN_ID ? Number(env.CHAIN_ID) : DEFAULT_CHAIN_ID,
    address: env.ROUTER_ADDRESS ? (env.ROUTER_ADDRESS.toLowerCase() as Address) : null,
    origin,
  };
}

/** The EIP-712 domain of this deployment's precommits and off-chain result writes. */
export function deploymentDomain(env: DeploymentVars): SigningDomain {
  return signingDomain(routerIdentity(env, ""));
}
