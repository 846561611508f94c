import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Hex, parseEventLogs } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { minerStakingAbi } from "../../shared/chain.ts";
import { chainClients, type LocalChain, startChain, tokenBalance } from "../helpers/chain.ts";
import { api, type Miner, type Router, startMiner, startRouter, tempDir, until } from "../helpers/network.ts";

// Stake on a real local chain: the router reads each miner's stake from MinerStaking (MIN_STAKE gates it), the
// agent stakes from its own wallet with `--stake` (funded by the development faucet), and a provable fault (a bad
// commit) is slashed on chain by the router's key, its transaction on the ledger row.

const MIN_STAKE = 1_000_000; // 1 tUSD
let chain: LocalChain;
let router: Router;
const miners: Miner[] = [];

beforeAll(async () => {
  chain = await startChain();
  // Half the stake at risk per provable fault, so one slash is plain to see.
  router = await startRouter({ chain, vars: { MIN_STAKE: String(MIN_STAKE), SLASH_FRACTION: "0.5" } });
});

afterAll(async () => {
  await Promise.all(miners.map((m) => m.stop("SIGKILL")));
  await router?.stop();
  await chain?.stop();
});

const reader = () => chainClients(chain, chain.deployer.privateKey).public;
const stakeOf = (address: string) =>
  reader().readContract({ address: chain.staking, abi: minerStakingAbi, functionName: "stakeOf", args: [address as Hex] });

describe("GET /api/v1/chain and the development faucet", () => {
  it("names the token, the staking contract and the rules, without a key", async () => {
    const res = await api(router, "/api/v1/chain", { key: null });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      enabled: true,
      chain_id: 31337,
      token: { symbol: "tUSD", decimals: 6, eip712: { name: "Test USD", version: "1" } },
      staking: { unbonding_delay_s: chain.unbondingDelay },
      min_stake: MIN_STAKE,
      declared_stake: false,
    });
    expect(res.body.token.address.toLowerCase()).toBe(chain.token.toLowerCase());
    expect(res.body.staking.address.toLowerCase()).toBe(chain.staking.toLowerCase());
    expect(res.body.faucet).toMatchObject({ tokens: "1000000000" });
  });

  it("funds a wallet once, then answers 429 with retry-after for the same address", async () => {
    const address = privateKeyToAccount(generatePrivateKey()).address;
    const first = await api(router, "/api/v1/chain/faucet", { key: null, body: { address } });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.tx_hashes).toHaveLength(2);
    expect(await tokenBalance(chain, address)).toBe(1_000_000_000n);
    expect(await reader().getBalance({ address })).toBeGreaterThan(0n);
    const again = await api(router, "/api/v1/chain/faucet", { key: null, body: { address } });
    expect(again.status).toBe(429);
    expect(again.body.error.code).toBe("rate_limited");
    expect(Number(again.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await tokenBalance(chain, address)).toBe(1_000_000_000n);
  });
});

describe("stake from the chain", () => {
  it("a declared stake with nothing staked on chain is refused", async () => {
    const me = privateKeyToAccount(generatePrivateKey());
    const ch = await api(router, "/api/v1/miners/challenge", { key: null, body: { address: me.address } });
    const signature = await me.signMessage({ message: ch.body.message });
    const body = {
      address: me.address,
      nonce: ch.body.nonce,
      signature,
      models: ["edge/tiny-gpt2"],
      device: "cpu",
      capacity: 1,
      stake: 50 * MIN_STAKE,
    };
    const res = await api(router, "/api/v1/miners/register", { key: null, body });
    expect(res.status).toBe(403);
    expect(res.body.error.details).toMatchObject({ stake: 0, source: "chain", min_stake: MIN_STAKE });
  });

  let cheater: Miner;
  let address: string;

  it("a miner staking below MIN_STAKE is refused; topping its stake up on chain lets it register", async () => {
    const keyFile = join(tempDir("stake-miner"), "key.json");
    const poor = await startMiner(router.url, { keyFile, name: "poor", args: ["--stake", String(MIN_STAKE / 2)] });
    miners.push(poor);
    const staked = await poor.waitFor("staked", undefined, 120_000);
    expect(staked).toMatchObject({ added: String(MIN_STAKE / 2), staked: String(MIN_STAKE / 2) });
    expect(await poor.exited).toBe(1);
    expect(poor.log()).toMatch(/below the pool minimum/);
    address = (JSON.parse(readFileSync(keyFile, "utf8")) as { address: string }).address.toLowerCase();
    expect(await stakeOf(address)).toBe(BigInt(MIN_STAKE / 2));

    // The same wallet, asking for 2 tUSD: it stakes only the difference, then registers.
    cheater = await startMiner(router.url, {
      keyFile,
      name: "cheater",
      args: ["--stake", String(2 * MIN_STAKE), "--test-dishonest", "bad-commit"],
    });
    miners.push(cheater);
    await cheater.waitFor("ready", undefined, 120_000);
    expect(cheater.events.find((e) => e.event === "staked")).toMatchObject({
      added: String(1.5 * MIN_STAKE),
      staked: String(2 * MIN_STAKE),
    });
    expect(await stakeOf(address)).toBe(BigInt(2 * MIN_STAKE));
    const node = (await api(router, "/api/v1/miners")).body.nodes.find((n: { address: string }) => n.address === address);
    expect(node).toMatchObject({ stake: 2 * MIN_STAKE, stake_source: "chain", status: "online" });
  });

  it("a bad commit is slashed on chain: stakeOf drops and the ledger row carries the transaction", async () => {
    const created = await api(router, "/api/v1/sessions", { body: { deposit: 1_000_000, redundancy: 1, task_timeout: 20 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const sid = created.body.id as string;
    await until(async () => ((await api(router, `/api/v1/sessions/${sid}`)).body.usage?.connected_miners ?? []).length === 1, 30_000);
    // Its commit does not match its precommit: rejected; with nobody else to take it the task fails after 5 s.
    const task = api(router, `/api/v1/completions/${sid}`, { body: { prompt: "Slash me", max_tokens: 4, timeout: 5 } });
    const slash = await until(
      async () => {
        const { entries } = (await api(router, `/api/v1/miners/${address}/ledger`)).body;
        return entries?.find((e: { kind: string; status: string }) => e.kind === "slash" && e.status === "confirmed");
      },
      60_000,
      250,
    );
    await task;
    expect(slash).toMatchObject({ kind: "slash", amount: MIN_STAKE, session_id: sid });
    expect(slash.reason).toMatch(/precommit/);
    expect(slash.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    expect(await stakeOf(address)).toBe(BigInt(MIN_STAKE));

    const receipt = await reader().getTransactionReceipt({ hash: slash.tx_hash });
    expect(receipt.status).toBe("success");
    const [event] = parseEventLogs({ abi: minerStakingAbi, logs: receipt.logs, eventName: "Slashed" });
    expect(event.args).toMatchObject({ amount: BigInt(MIN_STAKE), evidenceHash: slash.evidence_hash });
    expect(event.args.miner.toLowerCase()).toBe(address);

    // The stake at risk is the chain's figure now: the confirmed slash is not subtracted a second time.
    const node = await until(async () => {
      const n = (await api(router, "/api/v1/miners")).body.nodes.find((x: { address: string }) => x.address === address);
      return n?.stake === MIN_STAKE && n;
    }, 10_000);
    expect(node).toMatchObject({ stake: MIN_STAKE, stake_source: "chain", balance: -MIN_STAKE });
  });
});
