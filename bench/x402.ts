// `npm run bench:x402`: what the x402 path adds to a request. One local chain (ganache), the router (wrangler dev)
// and one miner; the same completion (same prompt, max_tokens, temperature 0), one client loop, interleaved:
//   unpaid     POST /api/v1/completions with the API key
//   presigned  POST /api/v1/x402/completions with a payment signed before the clock starts: the router's verify
//              (facilitator: signature, balance, simulation) + the durable hold + settlement (a transferWithAuthorization
//              mined on the local chain, its receipt awaited) + the re-signed receipt
//   client     the same through the unmodified @x402/fetch client: its first request's 402, signing, then the paid one
// Prints p50 / p95 of each and of the differences; asserts nothing.
//
//   --n=N            requests of each kind (default 30), after --warmup=W of each (default 3)
//   --max-tokens=N   tokens per completion (default 8)

import { x402Client } from "@x402/core/client";
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from "@x402/core/http";
import type { PaymentRequired } from "@x402/core/types";
import { ExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPaymentFromConfig } from "@x402/fetch";
import { privateKeyToAccount } from "viem/accounts";
import { startChain, tokenBalance } from "../test/helpers/chain.ts";
import { API_KEY, type Miner, type Router, startMiner, startRouter } from "../test/helpers/network.ts";

const args = new Map(process.argv.slice(2).map((a) => a.replace(/^--/, "").split("=") as [string, string]));
const N = Number(args.get("n") ?? 30);
const WARMUP = Number(args.get("warmup") ?? 3);
const MAX_TOKENS = Number(args.get("max-tokens") ?? 8);
const NETWORK = "eip155:31337" as const;
const BODY = JSON.stringify({ prompt: "The capital of France is", max_tokens: MAX_TOKENS, temperature: 0 });

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const ms = (n: number) => `${n.toFixed(1)} ms`;

async function timed(fn: () => Promise<Response>): Promise<number> {
  const t0 = performance.now();
  const res = await fn();
  const text = await res.text();
  const dt = performance.now() - t0;
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text.slice(0, 300)}`);
  return dt;
}

const chain = await startChain();
let router: Router | undefined;
let miner: Miner | undefined;
try {
  router = await startRouter({ chain });
  miner = await startMiner(router.url, { name: "bench-x402" });
  await miner.waitFor("ready", undefined, 180_000);
  const url = router.url;
  const key = chain.accounts[0].privateKey;
  const account = privateKeyToAccount(key);
  const scheme = { network: NETWORK, client: new ExactEvmScheme(account) };
  const spendControls = { allowedAssets: [{ network: NETWORK, asset: chain.token }] };
  const paidFetch = wrapFetchWithPaymentFromConfig(fetch, { schemes: [scheme], spendControls });
  const signer = x402Client.fromConfig({ schemes: [scheme], spendControls });
  const post = (headers: Record<string, string>) => ({
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: BODY,
  });

  const first = await fetch(`${url}/api/v1/x402/completions`, post({}));
  const required: PaymentRequired = decodePaymentRequiredHeader(first.headers.get("payment-required")!);
  await first.text();
  const presigned = async () => encodePaymentSignatureHeader(await signer.createPaymentPayload(required));

  const kinds = {
    unpaid: async () => timed(() => fetch(`${url}/api/v1/completions`, post({ authorization: `Bearer ${API_KEY}` }))),
    presigned: async () => {
      const header = await presigned(); // signed before the clock starts
      return timed(() => fetch(`${url}/api/v1/x402/completions`, post({ "PAYMENT-SIGNATURE": header })));
    },
    client: async () => timed(() => paidFetch(`${url}/api/v1/x402/completions`, post({}))),
  };
  const times: Record<keyof typeof kinds, number[]> = { unpaid: [], presigned: [], client: [] };
  const before = await tokenBalance(chain, account.address);
  for (let i = 0; i < WARMUP + N; i++) {
    for (const k of Object.keys(kinds) as (keyof typeof kinds)[]) {
      const dt = await kinds[k]();
      if (i >= WARMUP) times[k].push(dt);
    }
  }
  const spent = before - (await tokenBalance(chain, account.address));
  console.log(
    `x402 bench: ${N} requests of each kind (after ${WARMUP} warm-up), max_tokens ${MAX_TOKENS}, price ${required.accepts[0].amount} tUSD units`,
  );
  for (const k of Object.keys(times) as (keyof typeof times)[]) {
    console.log(`  ${k.padEnd(10)} p50 ${ms(pct(times[k], 50))}  p95 ${ms(pct(times[k], 95))}`);
  }
  const added = (k: "presigned" | "client") => times[k].map((t, i) => t - times.unpaid[i]);
  console.log(
    `  added by verify + settle (presigned − unpaid):       p50 ${ms(pct(added("presigned"), 50))}  p95 ${ms(pct(added("presigned"), 95))}`,
  );
  console.log(
    `  added end to end with @x402/fetch (client − unpaid): p50 ${ms(pct(added("client"), 50))}  p95 ${ms(pct(added("client"), 95))}`,
  );
  console.log(`  tUSD units paid: ${spent} (${2 * (WARMUP + N)} paid requests)`);
} finally {
  await miner?.stop();
  await router?.stop();
  await chain.stop();
}
