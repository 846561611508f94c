import type { EmbedMessage, SessionMinerMessage } from "../../shared/protocol.ts";
import type { Logger } from "./log.ts";
import type { TaskSink } from "./task-runner.ts";
import type { ValidatorApi } from "./validator.ts";

// TEST ONLY (dishonest.ts `lying-validator`): a miner that answers junk as a replica and, asked to validate a
// task it is a replica of, returns embeddings that favour its own output: its own text keeps its true vector
// and every other text's vector is moved next to it, each in a direction of its own. Its output becomes the
// medoid and every output "agrees" with it, so a round that takes this validator's word alone answers the junk.
// The router's defence (durable-objects/session-queue/validators.ts): replicas never validate while an outsider
// can, and when they must, at least three answer and the element-wise median outvotes the liar.

/** How far (relative to the own vector's length) each other vector is placed from it: all within any threshold. */
const SPREAD = 0.3;

/** The texts this miner committed lately: how it recognises its own output among the texts it is asked to embed. */
export class OwnOutputs {
  readonly #texts: string[] = [];

  add(text: string): void {
    this.#texts.push(text);
    if (this.#texts.length > 256) this.#texts.shift();
  }

  indexIn(texts: readonly string[]): number {
    return texts.findIndex((t) => this.#texts.includes(t));
  }
}

/** The sink with every inline commit's text remembered as this miner's own. */
export function recordCommits(sink: TaskSink, own: OwnOutputs): TaskSink {
  return {
    get sessionId() {
      return sink.sessionId;
    },
    send: (msg) => sink.send(msg),
    deliver: (msg) => {
      if (msg.type === "commit" && !msg.result_urn) own.add(msg.text);
      sink.deliver(msg);
    },
    hasPending: (taskId) => sink.hasPending(taskId),
    dropTask: (taskId) => sink.dropTask(taskId),
  };
}

/** The honest validator's embeddings, rewritten whenever one of the texts is this miner's own. */
export function lyingValidator(honest: ValidatorApi, own: OwnOutputs, log: Logger): ValidatorApi {
  return {
    model: honest.model,
    dispose: () => honest.dispose(),
    handle: async (msg: EmbedMessage): Promise<SessionMinerMessage> => {
      const reply = await honest.handle(msg);
      const mine = own.indexIn(msg.texts);
      if (reply.type !== "embeddings" || mine < 0) return reply;
      log.event("dishonest", `task ${msg.task_id}: embeddings rewritten to favour output ${mine} (test-only lying-validator)`, {
        task_id: msg.task_id,
        mode: "lying-validator",
      });
      return { ...reply, vectors: favour(reply.vectors, mine) };
    },
  };
}

/**
 * Vectors in which `mine` is the medoid: its own vector a stays, text i gets â + SPREAD·uᵢ, where uᵢ is a unit
 * vector orthogonal to a along its own axis. Every other text is then SPREAD away from â and about √2·SPREAD from
 * the others, so the own output is the most central and everything lies close to it.
 */
export function favour(vectors: readonly number[][], mine: number): number[][] {
  const a = vectors[mine];
  const norm = Math.hypot(...a) || 1;
  const unit = a.map((x) => x / norm);
  let axis = 0;
  return vectors.map((v, i) => {
    if (i === mine) return [...v];
    // uᵢ: the unit axis number `axis`, less its component along â.
    const k0 = axis++ % unit.length;
    const u = unit.map((x, k) => (k === k0 ? 1 : 0) - unit[k0] * x);
    const un = Math.hypot(...u) || 1;
    return unit.map((x, k) => x + (SPREAD * u[k]) / un);
  });
}

/** Vectors the embedder's size at random (unit length): an embedding answer that ran no model (`junk-embeddings`). */
export function junkEmbeddings(honest: ValidatorApi, log: Logger, dimension = 512): ValidatorApi {
  return {
    model: honest.model,
    dispose: () => honest.dispose(),
    handle: async (msg: EmbedMessage): Promise<SessionMinerMessage> => {
      if (msg.model !== honest.model) return honest.handle(msg);
      log.event("dishonest", `task ${msg.task_id}: ${msg.texts.length} random vectors instead of embeddings (test-only junk-embeddings)`, {
        task_id: msg.task_id,
        mode: "junk-embeddings",
      });
      const vectors = msg.texts.map(() => {
        const v = Array.from({ length: dimension }, () => Math.random() * 2 - 1);
        const n = Math.hypot(...v) || 1;
        return v.map((x) => x / n);
      });
      return { type: "embeddings", task_id: msg.task_id, model: honest.model, vectors };
    },
  };
}
