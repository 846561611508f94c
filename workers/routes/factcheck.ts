import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../env.ts";
import { ApiError } from "../lib/api-error.ts";
import { jsonBody } from "../lib/request-validation.ts";
import { asText, FACTCHECK_VERDICTS, factcheckPrompt, rubricParams } from "../lib/rubric.ts";
import type { Target } from "../lib/submit.ts";
import { materialLimit, rubricJudge, verdictFields } from "../lib/verdicts.ts";
import { consensusView, respond, runWork, submitRequest } from "../lib/work.ts";
import { type Consensus, Factcheck, GroundingDocument, SINGLE } from "../lib/work-schemas.ts";
import { parsePool, spread } from "../lib/work-sessions.ts";

// POST /api/v1/factcheck (alias /api/v1/fact-check): a claim judged SUPPORTED | REFUTED | UNVERIFIABLE by
// miners under the same rubric grammar as validate. Each mode has its own configured session
// (FACTCHECK_STANDARD_SESSION, FACTCHECK_REALTIME_SESSION; created on first use); realtime grounds the
// claim in `documents` from the request, else in documents from FACTCHECK_RETRIEVER_URL.

export const factcheck = new Hono<AppEnv>();

const SESSION_VAR = { standard: "FACTCHECK_STANDARD_SESSION", realtime: "FACTCHECK_REALTIME_SESSION" } as const;
const MAX_DOCUMENTS = 5;

function modeSession(env: Env, mode: "standard" | "realtime", bodyId: string | undefined): Target {
  if (bodyId) return { session_id: bodyId, configured: false };
  const [id] = parsePool(env[SESSION_VAR[mode]], SESSION_VAR[mode]);
  if (!id) {
    throw new ApiError("session_required", `no session_id in the body and no ${SESSION_VAR[mode]} configured for ${mode} factcheck`, {
      mode,
      var: SESSION_VAR[mode],
    });
  }
  return { session_id: id, configured: true };
}

const RetrieverAnswer = z.union([z.array(GroundingDocument), z.object({ documents: z.array(GroundingDocument) })]);

/** Asks the configured retriever: POST {claim, max_documents} → {documents: [...]} (or a bare array). */
async function retrieve(env: Env, claim: string, requestId: string): Promise<{ title?: string; url?: string; content: string }[]> {
  const url = env.FACTCHECK_RETRIEVER_URL?.trim();
  if (!url) {
    throw new ApiError(
      "configuration_error",
      "realtime factcheck needs `documents` in the request or a configured FACTCHECK_RETRIEVER_URL",
      {
        var: "FACTCHECK_RETRIEVER_URL",
      },
    );
  }
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ claim, max_documents: MAX_DOCUMENTS }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    // The fetch error names hosts and addresses of the operator's network: the log has it, the client does not.
    console.error(`request ${requestId}: factcheck retriever ${url} did not answer`, err);
    throw new ApiError("retriever_failed", "the retriever did not answer");
  }
  if (!res.ok) throw new ApiError("retriever_failed", `the retriever answered ${res.status}`, { status: res.status });
  const parsed = RetrieverAnswer.safeParse(await res.json().catch(() => null));
  if (!parsed.success) throw new ApiError("retriever_failed", "the retriever's answer holds no documents");
  const docs = Array.isArray(parsed.data) ? parsed.data : parsed.data.documents;
  return docs.slice(0, MAX_DOCUMENTS);
}

async function handle(c: Parameters<typeof runWork>[0]) {
  const b = c.req.valid("json" as never) as Factcheck;
  const target = modeSession(c.env, b.mode, b.session_id);
  let documents: { title?: string; url?: string; content: string }[] = [];
  let grounding: "none" | "request" | "retriever" = "none";
  if (b.mode === "realtime") {
    if (b.documents?.length) {
      documents = b.documents;
      grounding = "request";
    } else {
      documents = await retrieve(c.env, b.claim, c.get("requestId"));
      grounding = "retriever";
    }
  } else if (b.documents?.length) {
    documents = b.documents;
    grounding = "request";
  }
  const consensus: Consensus = b.consensus ? { ...SINGLE, ...b.consensus } : SINGLE;
  const limit = materialLimit(c.env);
  const claim = b.context === undefined ? b.claim : `${b.claim}\n(Context: ${asText(b.context).slice(0, limit)})`;
  const params = rubricParams(FACTCHECK_VERDICTS);

  const req = submitRequest(c.get("owner"), factcheckPrompt(claim, documents, limit), params, b);
  const targets = spread([target], consensus.replicas);
  const work = await runWork(c, { family: "factcheck", targets, req, consensus, judge: rubricJudge(FACTCHECK_VERDICTS) });
  return respond(
    c,
    work,
    {
      mode: b.mode,
      claim: b.claim,
      ...verdictFields(work),
      grounding: {
        source: grounding,
        documents: documents.map((d) => ({ title: d.title ?? null, url: d.url ?? null, chars: d.content.length })),
      },
      ...(b.metadata !== undefined ? { metadata: b.metadata } : {}),
    },
    consensusView(work.agg, consensus, [target.session_id]),
  );
}

factcheck.post("/v1/factcheck", jsonBody(Factcheck), (c) => handle(c));
factcheck.post("/v1/fact-check", jsonBody(Factcheck), (c) => handle(c));
