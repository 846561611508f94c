import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RouterClient, registerMiner } from "../../miner-agent/src/router-client.ts";
import type { RouterIdentity } from "../../shared/api.ts";
import { precommitTypedData, registrationMessage, resultHash, signingDomain } from "../../shared/signing.ts";
import { api, type Router, startRouter, until } from "../helpers/network.ts";
import { openRaw, type RawSocket, registerRaw } from "../helpers/raw-miner.ts";

// Issue 12: signatures bound to one deployment, and canonical task ids. Two real routers (wrangler dev), A and B,
// differ only in their identity (ROUTER_ADDRESS, CHAIN_ID); miners are driven by hand (raw WebSockets) so a test
// can send what a miner that signed for A would send to B.
//
// Before the fix the EIP-712 domain was one constant for every deployment and the registration message named no
// router: a precommit or registration signature obtained by one router verified at any other, and a router
// relaying another's challenge got the miner to sign it. Task ids were parsed with Number(), so "01" read task 1
// and a miner's "0x1" acked it.

const MODEL = "edge/sign-test";
const A_VARS = { ROUTER_NAME: "edge-router", ROUTER_ADDRESS: `0x${"aa".repeat(20)}`, CHAIN_ID: "31337" };
const B_VARS = { ROUTER_NAME: "edge-router", ROUTER_ADDRESS: `0x${"bb".repeat(20)}`, CHAIN_ID: "8453" };

let a: Router;
let b: Router;
const sockets: RawSocket[] = [];

beforeAll(async () => {
  [a, b] = await Promise.all([startRouter({ vars: A_VARS }), startRouter({ vars: B_VARS })]);
});

afterAll(async () => {
  for (const s of sockets) s.close();
  await Promise.all([a?.stop(), b?.stop()]);
});

async function challenge(router: Router, address: string): Promise<{ nonce: string; message: string; router: RouterIdentity }> {
  const res = await api(router, "/api/v1/miners/challenge", { key: null, body: { address } });
  expect(res.status).toBe(200);
  return res.body;
}

function register(router: Router, address: string, nonce: string, signature: string) {
  return api(router, "/api/v1/miners/register", {
    key: null,
    body: { address, nonce, signature, models: [MODEL], device: "cpu", capacity: 2 },
  });
}

/** A dedicated redundancy-1 session of router B for this miner, its session socket open. */
async function minerOnB(): Promise<{ reg: Awaited<ReturnType<typeof registerRaw>>; sid: string; ws: RawSocket }> {
  const reg = await registerRaw(b.url, { models: [MODEL] });
  const res = await api(b, "/api/v1/sessions", {
    body: { deposit: 1_000_000, model: MODEL, redundancy: 1, max_miners: 1, mode: "dedicated", dedicated_miners: [reg.address] },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const ws = await openRaw(b.url, `/api/v1/sessions/${res.body.id}/connect`, reg.token);
  sockets.push(ws);
  expect(ws.status).toBe(101);
  await ws.next((m) => m.type === "welcome");
  return { reg, sid: res.body.id, ws };
}

/** Submits a completion (not awaited: the test answers as the miner) and returns its assign. */
async function assigned(sid: string, ws: RawSocket, prompt: string) {
  // Its answer does not matter (the router may be stopped before it comes).
  api(b, `/api/v1/completions/${sid}`, { body: { prompt, max_tokens: 4, timeout: 4 } }).catch(() => {});
  return ws.next((m) => m.type === "assign" && m.input.prompt === prompt);
}

const replicaOf = async (sid: string, tid: string) => (await api(b, `/api/v1/tasks/${sid}/${tid}`)).body.replicas[0];

describe("signatures are bound to one deployment", () => {
  it("each router names itself in its challenge; their identities differ", async () => {
    const address = privateKeyToAccount(generatePrivateKey()).address;
    const [ca, cb] = [await challenge(a, address), await challenge(b, address)];
    expect(ca.router).toEqual({ name: "edge-router", chain_id: 31337, address: A_VARS.ROUTER_ADDRESS, origin: a.url });
    expect(cb.router).toEqual({ name: "edge-router", chain_id: 8453, address: B_VARS.ROUTER_ADDRESS, origin: b.url });
    expect(ca.message).toBe(registrationMessage(address, ca.nonce, ca.router));
    expect(cb.message).toContain(`origin: ${b.url}`);
  });

  it("a registration signature made for router A is refused by router B", async () => {
    const miner = privateKeyToAccount(generatePrivateKey());
    const identityA = (await challenge(a, miner.address)).router;
    // B's nonce, relayed through A: the miner signs the message A presents for it.
    const cb = await challenge(b, miner.address);
    const forA = await miner.signMessage({ message: registrationMessage(miner.address, cb.nonce, identityA) });
    const refused = await register(b, miner.address, cb.nonce, forA);
    expect(refused.status, JSON.stringify(refused.body)).toBe(401);
    expect(refused.body.error.code).toBe("unauthorized");
    // Control: the same nonce, signed for B itself, registers.
    const forB = await miner.signMessage({ message: cb.message });
    expect((await register(b, miner.address, cb.nonce, forB)).status).toBe(200);
  });

  it("the agent refuses to sign a challenge a router relays from another deployment", async () => {
    // A relay: whatever it is asked, it asks router B and answers what B answered.
    const relay: Server = createServer(async (req, res) => {
      let body = "";
      for await (const chunk of req) body += chunk;
      const upstream = await fetch(`${b.url}${req.url}`, { method: req.method, headers: { "content-type": "application/json" }, body });
      res.writeHead(upstream.status, { "content-type": "application/json" });
      res.end(await upstream.text());
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const relayUrl = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
    try {
      const miner = privateKeyToAccount(generatePrivateKey());
      const info = { models: [MODEL], device: "cpu" as const, capacity: 1 };
      await expect(registerMiner(new RouterClient(relayUrl), miner, info)).rejects.toMatchObject({ code: "challenge_mismatch" });
      // Control: talking to B itself, the agent registers and learns B's identity.
      const reg = await registerMiner(new RouterClient(b.url), miner, info);
      expect(reg.router).toMatchObject({ chain_id: 8453, address: B_VARS.ROUTER_ADDRESS, origin: b.url });
    } finally {
      await new Promise((r) => relay.close(r));
    }
  });

  it("a precommit signed for router A is refused by router B; one signed for B is taken", async () => {
    const { reg, sid, ws } = await minerOnB();
    const identityA = (await challenge(a, reg.account.address)).router;
    const hash = resultHash("an answer");

    const first = await assigned(sid, ws, "signed for A");
    ws.send({ type: "ack", task_id: first.task_id });
    const fields = { session: sid, task: first.task_id, miner: reg.account.address, hash };
    const forA = await reg.account.signTypedData(precommitTypedData(fields, signingDomain(identityA)));
    ws.send({ type: "precommit", task_id: first.task_id, hash, signature: forA });
    const rejected = await until(async () => {
      const r = await replicaOf(sid, first.task_id);
      return r.state === "rejected" && r;
    }, 10_000);
    expect(rejected.reason).toMatch(/signature/);

    const second = await assigned(sid, ws, "signed for B");
    ws.send({ type: "ack", task_id: second.task_id });
    const forB = await reg.account.signTypedData(precommitTypedData({ ...fields, task: second.task_id }, signingDomain(reg.router)));
    ws.send({ type: "precommit", task_id: second.task_id, hash, signature: forB });
    await until(async () => (await replicaOf(sid, second.task_id)).state === "precommitted", 10_000);
  });
});

describe("task ids are canonical decimal only", () => {
  it("a route or a miner's message naming a task any other way names no task", async () => {
    const { sid, ws } = await minerOnB();
    const first = await assigned(sid, ws, "canonical ids");
    expect(first.task_id).toMatch(/^[1-9]\d*$/);
    const tid = first.task_id as string;
    for (const spelling of [`0${tid}`, `0x${Number(tid).toString(16)}`, `${tid}e0`, `%20${tid}`, `${tid}.0`, `+${tid}`]) {
      const res = await api(b, `/api/v1/tasks/${sid}/${spelling}`);
      expect(res.status, spelling).toBe(400);
      expect(res.body.error.code).toBe("invalid_request");
    }
    expect((await api(b, `/api/v1/tasks/${sid}/${tid}`)).status).toBe(200);
    expect((await api(b, `/api/v1/tasks/${sid}?before=0${Number(tid) + 1}`)).status).toBe(400);

    // The miner's ack under another spelling is a protocol error and acks nothing; the canonical one acks.
    ws.send({ type: "ack", task_id: `0${tid}` });
    ws.send({ type: "ack", task_id: `0x${Number(tid).toString(16)}` });
    const errors = await until(async () => {
      const e = ws.messages.filter((m) => m.type === "error");
      return e.length >= 2 && e;
    }, 10_000);
    expect(errors.map((e) => e.code)).toEqual(["invalid_message", "invalid_message"]);
    expect((await replicaOf(sid, tid)).state).toBe("assigned");
    ws.send({ type: "ack", task_id: tid });
    await until(async () => (await replicaOf(sid, tid)).state === "acked", 10_000);
  });
});
