import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { API_KEY, api, type Miner, ROOT, type Router, startMiner, startRouter, until } from "../helpers/network.ts";

// The portal (static pages under /portal/ and GET /api/v1/network/events) in headless Chromium — Debian's
// `chromium`, driven by playwright-core, which downloads no browser — against the real router (wrangler dev; the
// integration tests' global setup runs `npm run build:portal` first) and a real miner process. In order: a wrong key is refused; the owner signs in
// with the keyboard and watches the miner appear live; a playground prompt streams and its receipt verifies in the
// browser; the task's timeline shows; another tenant sees none of it; the miner's going away shows live. Each page's
// screenshot is saved under .cache/screenshots (git-ignored).

const BOB = "bob-key-0123456789abcdef";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(ROOT, ".cache", "screenshots");

let router: Router;
let steady: Miner[] = [];
let miner: Miner | null = null;
let browser: Browser;
let ctx: BrowserContext;
let page: Page;
let task = { sid: "", tid: "" };

const shot = (p: Page, name: string) => p.screenshot({ path: join(SHOTS, `portal-${name}.png`), fullPage: true });

async function signIn(p: Page, key: string): Promise<void> {
  await p.goto(`${router.url}/portal/`);
  // The key field has focus on load: sign in with the keyboard only.
  await p.waitForFunction(() => document.activeElement?.id === "key");
  await p.keyboard.type(key);
  await p.keyboard.press("Enter");
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run does)`);
  mkdirSync(SHOTS, { recursive: true });
  router = await startRouter({
    vars: { API_KEYS: `dev:${API_KEY},bob:${BOB}`, PORTAL_STREAM_INTERVAL_MS: "500", PORTAL_VIEWERS_PER_IP: "8" },
  });
  // Two miners there from the start (a redundancy-2 similarity task needs a third miner to validate it); the test
  // starts and stops a third one while the owner watches.
  steady = await Promise.all([startMiner(router.url, { name: "portal-a" }), startMiner(router.url, { name: "portal-b" })]);
  await Promise.all(steady.map((m) => m.waitFor("ready", undefined, 120_000)));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  page = await ctx.newPage();
});

afterAll(async () => {
  await browser?.close();
  await miner?.stop();
  await Promise.all(steady.map((m) => m.stop()));
  await router?.stop();
});

describe("the portal in a real browser", () => {
  it("is served by the Worker as static pages with a strict CSP, leaving the API as it was", async () => {
    const res = await fetch(`${router.url}/portal/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    expect(res.headers.get("content-security-policy")).toContain("connect-src 'self'");
    expect(await res.text()).toContain("/portal/js/app.js");
    expect((await fetch(`${router.url}/portal/js/app.js`)).status).toBe(200);
    const bare = await fetch(`${router.url}/portal`, { redirect: "manual" });
    expect(bare.status, "GET /portal redirects to /portal/").toBeGreaterThanOrEqual(300);
    expect(new URL(bare.headers.get("location")!, router.url).pathname).toBe("/portal/");
    expect((await api(router, "/api/v1/ping", { key: null })).status).toBe(200);
    // The live stream is an authenticated route like the rest.
    expect((await api(router, "/api/v1/network/events", { key: "wrong" })).status).toBe(401);
  });

  it("refuses a wrong key", async () => {
    await signIn(page, "not-a-key-of-this-router");
    await expect.poll(() => page.textContent("#signin-error")).toContain("refused this key");
    expect(await page.isVisible("#nav")).toBe(false);
    await shot(page, "signin");
  });

  it("signs in and shows a miner appear live on the network page", async () => {
    await signIn(page, API_KEY);
    await page.waitForSelector("#figures .tile");
    expect(await page.textContent("#who")).toContain("dev");
    await page.waitForSelector("#miners-table");
    expect(await page.textContent("#miners-connected")).toBe("2");
    const height = Number((await page.textContent("#block-height"))!.replace(/,/g, ""));
    miner = await startMiner(router.url, { name: "portal-miner" });
    await miner.waitFor("ready", undefined, 120_000);
    const address = miner.address()!;
    const row = page.locator("#miners-table tr", { hasText: address.slice(0, 10) });
    await row.waitFor({ timeout: 30_000 });
    await expect.poll(() => row.textContent(), { timeout: 30_000 }).toContain("online");
    // The block height ticks.
    await expect.poll(async () => Number((await page.textContent("#block-height"))!.replace(/,/g, ""))).toBeGreaterThan(height);
    expect(await page.textContent("#miners-connected")).toBe("3");
    await shot(page, "network-join");
  });

  it("streams a playground prompt and verifies its receipt in the browser", async () => {
    await page.click("nav >> text=Playground");
    await page.waitForSelector("#pg-prompt");
    await page.fill("#pg-prompt", "The children walked to the river and");
    await page.fill("#pg-max-tokens", "32");
    // Both miners, sampled independently, judged by embedding similarity (a validator miner embeds the outputs).
    await page.fill("#pg-redundancy", "2");
    await page.selectOption("#pg-consensus", "similarity");
    await page.fill("#pg-temperature", "0.8");
    // Two independent samples of a tiny model may or may not agree: best effort answers either way (flagged).
    await page.check("#pg-best-effort");
    // Count the text's growth: a streamed answer arrives in more than one piece.
    await page.evaluate(() => {
      const out = document.getElementById("pg-output")!;
      (window as unknown as { pieces: number }).pieces = 0;
      new MutationObserver(() => (window as unknown as { pieces: number }).pieces++).observe(out, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    });
    await page.click("#pg-run");
    await page.waitForFunction(
      () => document.getElementById("receipt-status") || document.getElementById("pg-state")?.textContent?.startsWith("Failed"),
      undefined,
      { timeout: 90_000 },
    );
    expect(await page.textContent("#pg-state")).toBe("Done.");
    expect(await page.textContent("#receipt-status")).toContain("Receipt verified");
    expect((await page.textContent("#pg-output"))!.length).toBeGreaterThan(0);
    expect(await page.evaluate(() => (window as unknown as { pieces: number }).pieces)).toBeGreaterThan(1);
    const receipt = JSON.parse((await page.textContent("#receipt-json"))!);
    expect(receipt.signer).toBe((await api(router, "/api/v1/about", { key: null })).body.receipt_signer);
    task = { sid: receipt.session_id, tid: receipt.tasks[0].task_id };
    await shot(page, "playground");
  });

  it("a changed receipt does not verify in the browser (the check can fail)", async () => {
    const receipt = JSON.parse((await page.textContent("#receipt-json"))!);
    const about = (await api(router, "/api/v1/about", { key: null })).body;
    // A string, not a function: vitest would rewrite an import() written here. The same bundled module the playground used.
    const verdicts = await page.evaluate(`(async () => {
      const url = performance.getEntriesByType("resource").map((e) => e.name).find((n) => /\\/js\\/receipt-[^/]+\\.js$/.test(n));
      const { verifyReceipt } = await import(url);
      const r = ${JSON.stringify(receipt)};
      const args = [${JSON.stringify(about.receipt_signer)}, ${JSON.stringify(about.receipt_domain)}];
      return [await verifyReceipt(r, ...args), await verifyReceipt({ ...r, block_height: r.block_height + 1 }, ...args)];
    })()`);
    expect(verdicts).toEqual([true, false]);
  });

  it("opens the task's timeline: replicas, commitments, consensus", async () => {
    await page.click("text=Open the timeline of task");
    await page.waitForSelector("#timeline li.done");
    const timeline = await page.textContent("#timeline");
    for (const step of ["created", "assigned", "acked", "precommitted", "committed", "validated, closed"]) expect(timeline).toContain(step);
    expect(timeline).toMatch(/block \d+/);
    expect(await page.textContent("#task-status")).toContain("closed");
    const replicas = await page.textContent("#replicas");
    // Two of the three miners ran it (the pool picks which).
    const shown = [...steady, miner!].filter((m) => replicas!.includes(m.address()!.slice(0, 10).toLowerCase()));
    expect(shown).toHaveLength(2);
    expect(replicas).toMatch(/0x[0-9a-f]{10}…[0-9a-f]{4}/);
    expect(await page.textContent("#consensus")).toContain("similarity");
    expect(await page.textContent("#consensus")).toMatch(/agreed|no_quorum/);
    // The distances chart: one bar per replica against the threshold.
    expect(await page.locator("#consensus svg rect").count()).toBe(2);
    expect(await page.textContent("#consensus svg")).toContain("threshold");
    expect(await page.locator("#replicas tbody tr").count()).toBe(2);
    await shot(page, "task");
  });

  it("shows the sessions, the session's tasks, the miner and the keys and usage pages", async () => {
    await page.goto(`${router.url}/portal/#/sessions`);
    await page.waitForSelector("#sessions-table");
    expect(await page.textContent("#sessions-table")).toContain(task.sid);
    await shot(page, "sessions");
    await page.click(`#sessions-table >> text=${task.sid}`);
    await page.waitForSelector("#tasks table");
    expect(await page.textContent("#tasks")).toContain(`#${task.tid}`);
    await shot(page, "session");
    await page.goto(`${router.url}/portal/#/miners/${miner!.address()}`);
    await page.waitForSelector("#miner-live .tile");
    expect(await page.textContent("#miner-live")).toContain(task.sid);
    await shot(page, "miner");
    const created = await api(router, "/api/v1/keys", { body: { name: "portal-test" } });
    expect(created.status).toBe(201);
    await page.goto(`${router.url}/portal/#/keys`);
    await page.waitForSelector("#usage-table");
    expect(await page.textContent("#keys-table")).toContain(created.body.prefix);
    expect(await page.textContent("#usage-table")).toContain("edge/tiny-gpt2");
    await shot(page, "keys");
  });

  it("reads well at a phone's width", async () => {
    const phone = await ctx.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    await signIn(phone, API_KEY);
    await phone.waitForSelector("#miners-table");
    // Only the miners table scrolls sideways (in its own box); the page itself does not.
    expect(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(phone, "network-phone");
    await phone.close();
  });

  it("shows another tenant none of the owner's sessions or tasks", async () => {
    const bobCtx = await browser.newContext();
    const bob = await bobCtx.newPage();
    await signIn(bob, BOB);
    await bob.waitForSelector("#figures .tile");
    // The network page: the miner, but not the owner's session among its sessions.
    await bob.goto(`${router.url}/portal/#/sessions`);
    await bob.waitForSelector("main h1");
    await bob.waitForFunction(() => document.querySelector("#sessions-table") || document.body.textContent?.includes("No session yet"));
    expect(await bob.textContent("main")).not.toContain(task.sid);
    await bob.goto(`${router.url}/portal/#/tasks/${task.sid}/${task.tid}`);
    await expect.poll(() => bob.textContent("main")).toMatch(/(session|task)_not_found/);
    await bob.goto(`${router.url}/portal/#/miners/${miner!.address()}`);
    await bob.waitForSelector("#miner-live .tile");
    expect(await bob.textContent("main")).not.toContain(task.sid);
    await bobCtx.close();
  });

  it("shows the miner go offline live", async () => {
    await page.goto(`${router.url}/portal/#/network`);
    const row = page.locator("#miners-table tr", { hasText: miner!.address()!.slice(0, 10) });
    await expect.poll(() => row.textContent(), { timeout: 30_000 }).toContain("online");
    await expect.poll(() => page.textContent("#results-rate")).not.toBe("—");
    await shot(page, "network");
    await miner!.stop();
    miner = null;
    await expect.poll(() => row.textContent(), { timeout: 30_000 }).toContain("offline");
    await until(async () => (await page.textContent("#miners-connected")) === "2", 30_000);
  });

  it("caps the open network streams of one client IP", async () => {
    // The browser's streams may still hold slots (wrangler dev does not report a gone client): open until refused.
    const open: Response[] = [];
    let refused: Response | null = null;
    for (let i = 0; i < 9 && !refused; i++) {
      const res = await fetch(`${router.url}/api/v1/network/events`, { headers: { authorization: `Bearer ${API_KEY}` } });
      if (res.status === 200) open.push(res);
      else refused = res;
    }
    expect(refused?.status).toBe(429);
    expect((await refused!.json()).error).toMatchObject({ code: "rate_limited", details: { limit: 8 } });
    for (const res of open) await res.body?.cancel();
  });
});
