import { ApiFailure, get, getKey, setKey } from "./api.ts";
import { fill, h } from "./dom.ts";
import { stopNetwork } from "./network-stream.ts";
import { keysPage } from "./pages/keys.ts";
import { minerPage } from "./pages/miner.ts";
import { networkPage } from "./pages/network.ts";
import { playgroundPage } from "./pages/playground.ts";
import { sessionPage, sessionsPage } from "./pages/sessions.ts";
import { taskPage } from "./pages/task.ts";

// The portal: one page, hash routes (#/network, #/sessions, #/sessions/<id>, #/tasks/<session>/<task>,
// #/miners/<address>, #/playground, #/keys). Sign-in checks the key against GET /api/v1/info and keeps it in
// sessionStorage; every page reads the router's REST routes with it, so a tenant sees what its key may see.

export type Page = (main: HTMLElement, params: string[], signal: AbortSignal) => void | Promise<void>;

const ROUTES: [RegExp, Page, string][] = [
  [/^network$/, networkPage, "Network"],
  [/^sessions$/, sessionsPage, "Sessions"],
  [/^sessions\/([^/]+)$/, sessionPage, "Session"],
  [/^tasks\/([^/]+)\/([^/]+)$/, taskPage, "Task"],
  [/^miners\/([^/]+)$/, minerPage, "Miner"],
  [/^playground$/, playgroundPage, "Playground"],
  [/^keys$/, keysPage, "Keys and usage"],
];

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
const who = document.getElementById("who")!;
let current: AbortController | null = null;

function signIn(message?: string): void {
  nav.hidden = true;
  fill(who);
  const input = h("input", { id: "key", name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message ?? "");
  const submit = async (e: Event) => {
    e.preventDefault();
    const key = input.value.trim();
    try {
      await get("/api/v1/info", key);
      setKey(key);
      void start();
    } catch (err) {
      error.textContent =
        err instanceof ApiFailure && err.status === 401
          ? "The router refused this key (401 unauthorized)."
          : `Sign-in failed: ${String(err)}`;
      input.focus();
    }
  };
  fill(
    main,
    h(
      "form",
      { class: "card signin", onsubmit: submit, "aria-describedby": "signin-help" },
      h("h1", {}, "Sign in"),
      h("p", { id: "signin-help" }, "Paste an API key (npm start prints the development key). It stays in this browser tab only."),
      h("label", { for: "key" }, "API key"),
      input,
      h("button", { type: "submit" }, "Sign in"),
      error,
    ),
  );
  input.focus();
}

async function start(): Promise<void> {
  nav.hidden = false;
  const usage = await get("/api/v1/usage").catch(() => null);
  fill(who, usage?.owner ? `Signed in as ${usage.owner}` : "Signed in");
  route();
}

function route(): void {
  if (!getKey()) return signIn();
  current?.abort();
  current = new AbortController();
  const path = location.hash.replace(/^#\/?/, "") || "network";
  const match = ROUTES.map(([re, page, title]) => [re.exec(path), page, title] as const).find(([m]) => m);
  for (const a of Array.from(nav.querySelectorAll("a"))) {
    if (a.getAttribute("href") === `#/${path.split("/")[0]}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!match) return void fill(main, h("h1", {}, "Not found"), h("p", {}, `No page ${path}.`));
  const [m, page, title] = match;
  document.title = `${title} · Edge inference portal`;
  fill(main);
  const signal = current.signal;
  Promise.resolve(page(main, m!.slice(1).map(decodeURIComponent), signal)).catch((err) => {
    if (signal.aborted) return;
    if (err instanceof ApiFailure && err.status === 401) return signIn("The router no longer accepts this key: sign in again.");
    main.append(h("p", { class: "error", role: "alert" }, err instanceof ApiFailure ? `${err.code}: ${err.message}` : String(err)));
  });
  main.focus({ preventScroll: true });
}

document.getElementById("signout")!.addEventListener("click", () => {
  setKey(null);
  current?.abort();
  stopNetwork();
  location.hash = "";
  signIn();
});
window.addEventListener("hashchange", () => route());
if (getKey()) void start();
else signIn();
