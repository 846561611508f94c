import { createServer } from "node:net";
import { afterAll, describe, expect, it } from "vitest";
import { freePort, type Router, startRouter } from "../helpers/network.ts";

// The test harness itself: a router start that loses its port to another process (a parallel suite, or one of
// wrangler's own picks) is tried again rather than failing the suite (stop 27's CI failure).

let router: Router | undefined;
afterAll(() => router?.stop());

describe("startRouter", () => {
  it("tries again when its port is taken, and comes up once the port is free", async () => {
    const port = await freePort();
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(port, "127.0.0.1", () => r()));
    // Freed after the first start has failed on it (wrangler gives up at once on a taken port).
    setTimeout(() => squatter.close(), 2_000);
    router = await startRouter({ port });
    expect(router.port).toBe(port);
    expect((await fetch(`${router.url}/api/v1/ping`)).status).toBe(200);
    expect(router.process.exitCode).toBeNull();
  }, 120_000);
});
