import { ApiError } from "./api-error.ts";

// The trial routes' settings and their in-process credential (routes/trial.ts, middleware/auth.ts).

/** The one owner every trial request runs as: trial callers share it, so none may read tasks (that needs a key). */
export const TRIAL_OWNER = "trial";
export const DEFAULT_TRIAL_SESSION_ID = "trial";
export const DEFAULT_TRIAL_MAX_TOKENS = 64;
export const DEFAULT_TRIAL_MAX_MINERS = 1;

export interface TrialConfig {
  limit: number;
  windowMs: number;
  sessionId: string;
  maxTokens: number;
  maxMiners: number;
}

const positiveInt = (value: string | undefined, fallback: number): number => {
  const n = Number(value);
  return value && Number.isInteger(n) && n > 0 ? n : fallback;
};

/** TRIAL_QUOTA `requests/seconds`; null when "0", empty or absent (the trial routes are off). */
export function trialConfig(env: Env): TrialConfig | null {
  const quota = (env.TRIAL_QUOTA ?? "").trim();
  if (quota === "" || quota === "0") return null;
  const m = /^(\d{1,6})\/(\d{1,8})$/.exec(quota);
  if (!m || Number(m[1]) === 0 || Number(m[2]) === 0) {
    if (m && Number(m[1]) === 0) return null;
    throw new ApiError("configuration_error", "TRIAL_QUOTA must be `requests/seconds` (e.g. 5/3600), 0 or empty", { var: "TRIAL_QUOTA" });
  }
  return {
    limit: Number(m[1]),
    windowMs: Number(m[2]) * 1000,
    sessionId: env.TRIAL_SESSION_ID?.trim() || DEFAULT_TRIAL_SESSION_ID,
    maxTokens: positiveInt(env.TRIAL_MAX_TOKENS, DEFAULT_TRIAL_MAX_TOKENS),
    maxMiners: positiveInt(env.TRIAL_MAX_MINERS, DEFAULT_TRIAL_MAX_MINERS),
  };
}

/**
 * The in-process requests routes/trial.ts makes: middleware/auth.ts lets exactly these through as TRIAL_OWNER.
 * Only Request objects the router made can be members; no header or body a client sends can forge one.
 */
const trialRequests = new WeakSet<Request>();

export function markTrial(req: Request): Request {
  trialRequests.add(req);
  return req;
}

export const isTrialRequest = (req: Request): boolean => trialRequests.has(req);
