import { ApiFailure, get, post, sse } from "../api.ts";
import { badge, fill, fmt, h, link, short, tiles } from "../dom.ts";

// Playground: a model and session settings, a prompt; the text streams in as the miners generate it, then the
// consensus (the task view) and the signed receipt, verified here in the browser with shared/receipt.ts
// verifyReceipt against the signer and domain GET /api/v1/about publishes. One session per settings, reused.

const SESSIONS = "portal.playground_sessions";

async function sessionFor(model: string, redundancy: number, consensus: string, best_effort: boolean): Promise<string> {
  const known = JSON.parse(sessionStorage.getItem(SESSIONS) ?? "{}") as Record<string, string>;
  const settings = `${model}|${redundancy}|${consensus}|${best_effort}`;
  if (known[settings]) return known[settings];
  const body = { name: "playground", model, redundancy, max_miners: Math.max(8, redundancy), consensus, best_effort, deposit: 1_000_000 };
  const created = await post("/api/v1/sessions", body);
  known[settings] = created.config.id;
  sessionStorage.setItem(SESSIONS, JSON.stringify(known));
  return created.config.id;
}

const field = (id: string, label: string, control: HTMLElement) => h("div", { class: "field" }, h("label", { for: id }, label), control);

function form(models: string[]) {
  const model = h("select", { id: "pg-model", name: "model" }, ...models.map((m) => h("option", { value: m }, m)));
  const redundancy = h("input", { id: "pg-redundancy", type: "number", min: 1, max: 5, value: 1, inputmode: "numeric" });
  const consensus = h("select", { id: "pg-consensus" }, ...["auto", "exact", "similarity"].map((m) => h("option", { value: m }, m)));
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: 1, max: 256, value: 24, inputmode: "numeric" });
  const temperature = h("input", { id: "pg-temperature", type: "number", min: 0, max: 2, step: 0.1, value: 0, inputmode: "decimal" });
  const prompt = h("textarea", { id: "pg-prompt", rows: 4, required: true }, "The edge network");
  const bestEffort = h("input", { id: "pg-best-effort", type: "checkbox" });
  const run = h("button", { type: "submit", id: "pg-run" }, "Run");
  return { model, redundancy, consensus, bestEffort, maxTokens, temperature, prompt, run };
}

async function verify(receipt: unknown): Promise<boolean> {
  const about = await get("/api/v1/about");
  const { verifyReceipt } = await import("../../../shared/receipt.ts");
  return verifyReceipt(receipt, about.receipt_signer, about.receipt_domain);
}

// biome-ignore lint/suspicious/noExplicitAny: the final chunk and the task view as JSON.
async function settle(out: HTMLElement, last: any, sid: string): Promise<void> {
  const ok = await verify(last.receipt);
  const task = await get(`/api/v1/tasks/${encodeURIComponent(sid)}/${last.task_id}`);
  const c = task.consensus;
  fill(
    out,
    h(
      "p",
      { id: "receipt-status", class: ok ? "ok" : "error", role: "status" },
      ok ? "✓ Receipt verified" : "✗ Receipt NOT verified",
      ` — signed by ${short(last.receipt?.signer)}`,
    ),
    tiles([
      ["Consensus", c ? `${c.method} ${c.status}` : "—"],
      ["Agreed", c ? `${c.agreed.length} of ${task.redundancy}` : "—"],
      ["Tokens", `${fmt(last.usage?.prompt_tokens)} + ${fmt(last.usage?.completion_tokens)}`],
      ["Cost", last.cost ? `${fmt(last.cost.total)} µUSD` : "—"],
      ["Block", fmt(last.receipt?.block_height)],
    ]),
    h("p", {}, link(`tasks/${encodeURIComponent(sid)}/${last.task_id}`, `Open the timeline of task #${last.task_id}`)),
    h("details", {}, h("summary", {}, "Receipt"), h("pre", { id: "receipt-json" }, JSON.stringify(last.receipt, null, 2))),
  );
}

export async function playgroundPage(main: HTMLElement, _p: string[], signal: AbortSignal): Promise<void> {
  const miners = await get("/api/v1/miners?limit=100");
  const models = [
    ...new Set<string>(
      miners.nodes.filter((m: { status: string }) => m.status === "online").flatMap((m: { models: string[] }) => m.models),
    ),
  ];
  const f = form(models.length ? models : ["edge/tiny-gpt2"]);
  const text = h("pre", { id: "pg-output", class: "output", "aria-label": "Generated text" });
  const state = h("p", { id: "pg-state", role: "status", class: "muted" });
  const after = h("div", { id: "pg-after" });
  const submit = async (e: Event) => {
    e.preventDefault();
    f.run.disabled = true;
    fill(text);
    fill(after);
    try {
      state.textContent = "Preparing the session…";
      const sid = await sessionFor(f.model.value, Number(f.redundancy.value), f.consensus.value, f.bestEffort.checked);
      state.textContent = `Streaming from session ${sid}…`;
      text.setAttribute("aria-busy", "true");
      const body = {
        prompt: f.prompt.value,
        max_tokens: Number(f.maxTokens.value),
        temperature: Number(f.temperature.value),
        stream: true,
      };
      // biome-ignore lint/suspicious/noExplicitAny: stream chunks as JSON.
      let last: any = null;
      for await (const ev of sse(`/api/v1/completions/${encodeURIComponent(sid)}`, body, signal)) {
        if (ev.data === "[DONE]") break;
        const chunk = JSON.parse(ev.data);
        if (chunk.error) throw new ApiFailure(0, chunk.error.code, chunk.error.message);
        text.append(chunk.choices?.[0]?.text ?? "");
        if (chunk.receipt) last = chunk;
      }
      text.setAttribute("aria-busy", "false");
      if (!last) throw new Error("the stream ended without a receipt");
      state.textContent = "Done: checking the receipt…";
      await settle(after, last, sid);
      state.textContent = "Done.";
    } catch (err) {
      if (!signal.aborted) state.textContent = err instanceof ApiFailure ? `Failed: ${err.code}: ${err.message}` : `Failed: ${String(err)}`;
    } finally {
      f.run.disabled = false;
    }
  };
  main.append(
    h("h1", {}, "Playground"),
    h(
      "form",
      { class: "card playground", onsubmit: submit },
      h(
        "div",
        { class: "row" },
        field("pg-model", "Model", f.model),
        field("pg-redundancy", "Redundancy (miners)", f.redundancy),
        field("pg-consensus", "Consensus", f.consensus),
      ),
      h("div", { class: "row" }, field("pg-max-tokens", "Max tokens", f.maxTokens), field("pg-temperature", "Temperature", f.temperature)),
      h(
        "div",
        { class: "check" },
        f.bestEffort,
        h("label", { for: "pg-best-effort" }, "Best effort: answer without a quorum (flagged) instead of failing"),
      ),
      field("pg-prompt", "Prompt", f.prompt),
      f.run,
    ),
    state,
    h("h2", {}, "Output ", badge("stream")),
    text,
    after,
  );
}
