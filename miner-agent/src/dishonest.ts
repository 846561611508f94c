import { randomBytes, randomInt } from "node:crypto";
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from "viem/accounts";
import type { Engine, GenerateRequest, GenerateResult } from "./engine-types.ts";

// TEST ONLY. Dishonest behaviours for the fault and cheat suite (`--test-dishonest <mode>` or env
// MINER_TEST_DISHONEST): a real miner process that lies in one precise way, so integration tests and
// `npm run bench:cheats` can check the router catches it. Nothing here runs unless the option is given; an
// honest miner never constructs a Dishonesty.
//
//   junk              skips the model and answers random text, correctly precommitted and signed
//   wrong-model       serves a different model (the builtin one built with another seed) under the declared id
//   bad-commit        computes honestly and precommits the true hash, then commits a different text
//   replay-signature  computes honestly but precommits with a signature by another key (not its own)
//   silent-after-ack  acks every task, then never sends anything about it

export const DISHONEST_MODES = ["junk", "wrong-model", "bad-commit", "replay-signature", "silent-after-ack"] as const;
export type DishonestMode = (typeof DISHONEST_MODES)[number];

export function isDishonestMode(v: string): v is DishonestMode {
  return (DISHONEST_MODES as readonly string[]).includes(v);
}

/** Folder id (under the model cache) of the builtin model's look-alike that `wrong-model` runs. */
export const WRONG_MODEL_VARIANT_ID = "edge/tiny-gpt2-variant";
/** The variant differs from the builtin model by its weight seed only: same shapes, speed and tokenizer. */
export const WRONG_MODEL_SEED_OFFSET = 1;

/** The hooks TaskRunner applies; each one is absent for modes that do not need it. */
export interface Dishonesty {
  readonly mode: DishonestMode;
  /** Ack, then drop the task on the floor. */
  readonly silentAfterAck: boolean;
  /** Replaces the engine's generation (junk). */
  generate?(req: GenerateRequest): Promise<GenerateResult>;
  /** Signs precommits with this account instead of the miner's own (replay-signature). */
  readonly signer?: PrivateKeyAccount;
  /** The text actually committed, given the text precommitted (bad-commit). */
  commitText?(precommitted: string): string;
}

export function createDishonesty(mode: DishonestMode): Dishonesty {
  switch (mode) {
    case "junk":
      return { mode, silentAfterAck: false, generate: junkGenerate };
    case "bad-commit":
      return {
        mode,
        silentAfterAck: false,
        // Same length, different bytes: a swap a careless check (length, prefix) would not notice.
        commitText: (text) => (text.length > 0 ? text.slice(0, -1) + (text.endsWith("x") ? "y" : "x") : "x"),
      };
    case "replay-signature":
      // A key that is not the miner's: its signatures recover to another address. (A miner never sees
      // another miner's precommit, so replaying one verbatim is not observable from here; the router's
      // check is the same either way: the signature must recover to the sender's own address.)
      return { mode, silentAfterAck: false, signer: privateKeyToAccount(generatePrivateKey()) };
    case "wrong-model":
      // The engine itself is swapped by cli.ts (see wrongModelEngine); the task path stays honest.
      return { mode, silentAfterAck: false };
    case "silent-after-ack":
      return { mode, silentAfterAck: true };
  }
}

const WORDS = ["lorem", "ipsum", "dolor", "sit", "amet", "quux", "zorp", "blarg", "fnord", "wibble", "plugh", "xyzzy"];

/** Random words, one per requested token, without running the model: what a lazy miner would send. */
async function junkGenerate(req: GenerateRequest): Promise<GenerateResult> {
  const n = req.params.max_tokens;
  let text = "";
  for (let i = 0; i < n; i++) {
    const piece = ` ${WORDS[randomInt(WORDS.length)]}${randomBytes(1)[0]! % 10}`;
    text += piece;
    req.onToken?.(piece);
  }
  return {
    text,
    finish_reason: "length",
    usage: { prompt_tokens: Math.max(1, Math.ceil(req.input.prompt.length / 4)), completion_tokens: n },
    inference_ms: 0,
  };
}

/** Presents an engine running some other model as the declared one (wrong-model). */
export function disguiseEngine(engine: Engine, declaredModel: string): Engine {
  return {
    model: declaredModel,
    device: engine.device,
    generate: (req) => engine.generate(req),
    dispose: () => engine.dispose(),
  };
}
