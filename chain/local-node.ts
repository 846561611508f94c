// The local development chain: ganache (from npm, in this process) as a JSON-RPC server with chain id 31337,
// a block per transaction, and accounts from a published development mnemonic. Deploys TestUSD and MinerStaking
// (or reuses them from a persisted --db), places Multicall3 at its canonical address, grants roles, funds accounts,
// prints ONE JSON line on stdout — {rpcUrl, chainId, token, staking, deployer, accounts: [{address, privateKey}]} —
// and serves until SIGINT/SIGTERM. Everything else goes to stderr.
//
//   node chain/local-node.ts [--port 8545] [--host 127.0.0.1] [--db <dir>] [--accounts 10]
//     [--unbonding-delay 3600] [--fund 0x…]… [--slasher 0x…]… [--minter 0x…]…
//
// --port 0 picks a free port (read it from rpcUrl). --fund addresses get 100 ETH and 1,000,000 tUSD, like the
// printed accounts; the deployer (account 0) owns both contracts and receives slashed stake.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { isAddress, toHex } from "viem";
import { mnemonicToAccount } from "viem/accounts";
import { LOCAL_CHAIN_ID, viemChain } from "../shared/chain.ts";
import {
  type Address,
  clients,
  DEV_MNEMONIC,
  type Deployment,
  deployContracts,
  deploymentLive,
  placeMulticall3,
  prepareAccounts,
} from "./deploy.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8545" },
    host: { type: "string", default: "127.0.0.1" },
    db: { type: "string" },
    accounts: { type: "string", default: "10" },
    "unbonding-delay": { type: "string", default: "3600" },
    fund: { type: "string", multiple: true, default: [] },
    slasher: { type: "string", multiple: true, default: [] },
    minter: { type: "string", multiple: true, default: [] },
  },
});

function addresses(list: string[], flag: string): Address[] {
  for (const a of list) if (!isAddress(a, { strict: false })) throw new Error(`--${flag} ${a} is not an address`);
  return list as Address[];
}

const count = Number(values.accounts);
const unbondingDelay = Number(values["unbonding-delay"]);
if (!Number.isInteger(count) || count < 2 || count > 100) throw new Error("--accounts must be 2 to 100");
if (!Number.isInteger(unbondingDelay) || unbondingDelay < 0) throw new Error("--unbonding-delay must be seconds ≥ 0");
const accounts = Array.from({ length: count }, (_, i) => mnemonicToAccount(DEV_MNEMONIC, { addressIndex: i }));
const privateKeyOf = (i: number) => toHex(accounts[i].getHdKey().privateKey!);

// ganache's websocket layer has no native build for this Node and says so on load; its JS fallback serves fine.
const warn = console.warn;
console.warn = (...args: unknown[]) => {
  const text = String(args[0]);
  if (!text.includes("µWS") && !text.startsWith("Falling back to a NodeJS implementation")) warn(...args);
};
const { default: ganache } = await import("ganache");

const dbDir = values.db ? resolve(values.db) : undefined;
if (dbDir) mkdirSync(join(dbDir, "ganache"), { recursive: true });
const server = ganache.server({
  chain: { chainId: LOCAL_CHAIN_ID, networkId: LOCAL_CHAIN_ID },
  wallet: { mnemonic: DEV_MNEMONIC, totalAccounts: count, defaultBalance: 10_000 },
  // "eager": each transaction is mined as it arrives and its hash returned once mined.
  miner: { blockTime: 0, instamine: "eager" },
  logging: { quiet: true },
  ...(dbDir ? { database: { dbPath: join(dbDir, "ganache") } } : {}),
});
await server.listen(Number(values.port), values.host);
const bound = server.address() as { address: string; port: number };
const rpcUrl = `http://${values.host}:${bound.port}`;

const chain = viemChain({ rpcUrl, chainId: LOCAL_CHAIN_ID, token: "0x", staking: "0x" });
const c = clients(rpcUrl, chain, accounts[0]);

// A persisted chain keeps its contracts: reuse them when the record beside the db still matches the chain.
const recordPath = dbDir ? join(dbDir, "deployment.json") : undefined;
let deployment: Deployment | undefined;
if (recordPath && existsSync(recordPath)) {
  const saved = JSON.parse(readFileSync(recordPath, "utf8")) as Deployment;
  if (saved.unbondingDelay === unbondingDelay && (await deploymentLive(c, saved))) deployment = saved;
  else console.error(`${recordPath} does not match this chain or build: deploying afresh`);
}
const reused = deployment !== undefined;
deployment ??= await deployContracts(c, unbondingDelay);
if (recordPath && !reused) writeFileSync(recordPath, `${JSON.stringify(deployment, null, 2)}\n`);
await placeMulticall3(c);
await prepareAccounts(c, deployment, {
  slashers: addresses(values.slasher, "slasher"),
  minters: addresses(values.minter, "minter"),
  fund: [...accounts.slice(1).map((a) => a.address), ...addresses(values.fund, "fund")],
});

console.log(
  JSON.stringify({
    rpcUrl,
    chainId: LOCAL_CHAIN_ID,
    token: deployment.token,
    staking: deployment.staking,
    unbondingDelay,
    reused,
    deployer: { address: accounts[0].address, privateKey: privateKeyOf(0) },
    accounts: accounts.slice(1).map((a, i) => ({ address: a.address, privateKey: privateKeyOf(i + 1) })),
  }),
);

let closing = false;
async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  // Closing flushes the persisted db; a second signal while it does is ignored.
  await server.close();
  process.exit(0);
}
process.on("SIGINT", close);
process.on("SIGTERM", close);
