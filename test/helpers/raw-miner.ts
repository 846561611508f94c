import { generatePrivateKey, type PrivateKeyAccount, privateKeyToAccount } from "viem/accounts";
import WebSocket from "ws";
import type { RouterIdentity } from "../../shared/signing.ts";

// A miner driven by hand for attack tests: it registers through the REST API like the agent (challenge, EIP-191
// signature) and opens raw WebSockets with whatever token the test gives it, so a test can send what no honest
// agent would (old or forged tokens, joins it was not told about, absurd heartbeats).

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface RawRegistration {
  account: PrivateKeyAccount;
  /** Lowercase, as the router keys miners. */
  address: string;
  token: string;
  expires_at: number;
  /** The deployment the router says it is: precommits and result writes are signed for its domain. */
  router: RouterIdentity;
}

/** A POST that waits out 429s (Retry-After), so a test registering many miners is paced, not refused. */
async function post(url: string, body: unknown): Promise<{ status: number; body: any }> {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const json = await res.json().catch(() => null);
    if (res.status !== 429 || attempt >= 20) return { status: res.status, body: json };
    await sleep(Number(res.headers.get("retry-after") ?? 1) * 1000);
  }
}

/** challenge → sign → register; the same account registering again gets a new token (and retires the old). */
export async function registerRaw(
  routerUrl: string,
  opts: { models: string[]; account?: PrivateKeyAccount; capacity?: number; stake?: number },
): Promise<RawRegistration> {
  const account = opts.account ?? privateKeyToAccount(generatePrivateKey());
  const ch = await post(`${routerUrl}/api/v1/miners/challenge`, { address: account.address });
  if (ch.status !== 200) throw new Error(`challenge: ${ch.status} ${JSON.stringify(ch.body)}`);
  const signature = await account.signMessage({ message: ch.body.message });
  const reg = await post(`${routerUrl}/api/v1/miners/register`, {
    address: account.address,
    nonce: ch.body.nonce,
    signature,
    models: opts.models,
    device: "cpu",
    capacity: opts.capacity ?? 1,
    stake: opts.stake ?? 1000,
  });
  if (reg.status !== 200) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`);
  return {
    account,
    address: account.address.toLowerCase(),
    token: reg.body.token,
    expires_at: reg.body.expires_at,
    router: reg.body.router,
  };
}

export interface RawSocket {
  /** 101 when the upgrade was accepted, else the refusal's HTTP status. */
  status: number;
  /** The refusal's body (the router's error envelope). */
  refusal: any;
  ws: WebSocket | null;
  messages: any[];
  /** Resolves with the first message (past or future) matching `pred`. */
  next(pred: (m: any) => boolean, timeoutMs?: number): Promise<any>;
  send(msg: unknown): void;
  close(): void;
}

/** Opens a WebSocket on `path` with `Authorization: Bearer <token>` and reports how the router answered. */
export function openRaw(routerUrl: string, path: string, token: string): Promise<RawSocket> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${routerUrl.replace(/^http/, "ws")}${path}`, {
      headers: { authorization: `Bearer ${token}` },
      perMessageDeflate: false,
    });
    const messages: any[] = [];
    const sock: RawSocket = {
      status: 0,
      refusal: null,
      ws,
      messages,
      async next(pred, timeoutMs = 15_000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const hit = messages.find(pred);
          if (hit) return hit;
          if (Date.now() > until) throw new Error(`no matching message in ${timeoutMs} ms; got ${JSON.stringify(messages).slice(0, 500)}`);
          await sleep(20);
        }
      },
      send: (msg) => ws.send(JSON.stringify(msg)),
      close: () => ws.close(),
    };
    ws.on("message", (data) => messages.push(JSON.parse(String(data))));
    ws.on("open", () => resolve({ ...sock, status: 101 }));
    ws.on("unexpected-response", (_req, res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => {
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {}
        resolve({ ...sock, status: res.statusCode ?? 0, refusal: body, ws: null });
        ws.terminate();
      });
    });
    ws.on("error", () => {});
  });
}

/** The claims inside a miner token (its first segment), as the router signed them. */
export function tokenClaims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[0], "base64url").toString("utf8"));
}
