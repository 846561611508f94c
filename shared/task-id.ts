import { z } from "zod";

// Task ids are positive integers written canonically in decimal ("1", "42"): never "0x1", "01", "1e0" or " 1".
// Signatures, URNs and keys cover the id as a string, so one task must have exactly one spelling; every route
// parameter, body field and WebSocket message takes only this form, and the SessionQueue parses nothing else.

/** The canonical spelling, as a regular-expression source (for URN patterns): 1 to 15 digits, no leading zero. */
export const TASK_ID_SOURCE = "[1-9][0-9]{0,14}";
const CANONICAL = new RegExp(`^${TASK_ID_SOURCE}$`);
/** The largest task id: a larger number would not print in 15 canonical digits. */
export const MAX_TASK_ID = 999_999_999_999_999;

export const TaskId = z
  .string()
  .regex(CANONICAL, "task ids are positive integers in canonical decimal (no sign, leading zero or exponent)");

/** The number a canonical task id names, or null for any other spelling. */
export function parseTaskId(id: string): number | null {
  return CANONICAL.test(id) ? Number(id) : null;
}
