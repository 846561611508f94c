import type { SessionServerMessage } from "../../shared/protocol.ts";
import type { SigningDomain } from "../../shared/signing.ts";
import type { SessionConfig } from "../../shared/views.ts";
import type { MinerSockets } from "../miner-sockets.ts";
import type { OutcomeReporter } from "../outcome-reporter.ts";
import type { MinerLoad } from "./miner-load.ts";
import type { TaskStore } from "./task-store.ts";

/** What a SessionQueue's collaborators (similarity rounds, stragglers) reach of it. */
export interface QueueParts {
  config(): SessionConfig;
  store: TaskStore;
  sockets: MinerSockets<SessionServerMessage>;
  load: MinerLoad;
  outcomes: OutcomeReporter;
  payloads: R2Bucket;
  /** This deployment's EIP-712 domain: precommits are verified under it (durable-objects/deployment.ts). */
  domain: SigningDomain;
  block(at: number): number;
  armAlarm(at: number): void;
}
