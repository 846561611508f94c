// Logging for the miner agent. Two formats: `text` for people (one short line per fact) and `json` (one object
// per line) so integration tests and log shippers can parse lines and wait on named events. Everything goes to
// stdout; stderr is left to the load progress bar and to anything the ONNX runtime prints.

export type LogFormat = "text" | "json";
export type LogLevel = "info" | "notice" | "warn" | "error";
export type LogFields = Record<string, unknown>;

export interface Logger {
  info(msg: string, fields?: LogFields): void;
  /** Shown even with --quiet: facts the operator must see (a freshly created wallet address, shutdown). */
  notice(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A named milestone (`ready`, `task_done`, …). JSON lines carry `event`; text shows just the message. */
  event(event: string, msg: string, fields?: LogFields, level?: LogLevel): void;
}

export interface LoggerOptions {
  format: LogFormat;
  quiet?: boolean;
  /** Where lines go; defaults to stdout. Tests pass a collector. */
  write?: (line: string) => void;
  now?: () => Date;
}

export function createLogger(opts: LoggerOptions): Logger {
  const write = opts.write ?? ((line: string) => void process.stdout.write(line + "\n"));
  const now = opts.now ?? (() => new Date());

  function emit(level: LogLevel, msg: string, fields: LogFields | undefined, event: string | undefined): void {
    // --quiet hides routine lines; JSON events stay because tests and tooling wait on them.
    if (opts.quiet && level === "info" && !(event && opts.format === "json")) return;
    const ts = now();
    if (opts.format === "json") {
      const obj: LogFields = { ts: ts.toISOString(), level };
      if (event) obj.event = event;
      obj.msg = msg;
      if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined && !(k in obj)) obj[k] = v;
      write(safeStringify(obj));
      return;
    }
    const tag = level === "warn" ? "warn: " : level === "error" ? "error: " : "";
    write(`[${ts.toISOString().slice(11, 23)}] ${tag}${msg}`);
  }

  return {
    info: (msg, fields) => emit("info", msg, fields, undefined),
    notice: (msg, fields) => emit("notice", msg, fields, undefined),
    warn: (msg, fields) => emit("warn", msg, fields, undefined),
    error: (msg, fields) => emit("error", msg, fields, undefined),
    event: (event, msg, fields, level = "info") => emit(level, msg, fields, event),
  };
}

function safeStringify(obj: LogFields): string {
  try {
    return JSON.stringify(obj, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return JSON.stringify({ ts: obj.ts, level: obj.level, msg: String(obj.msg) });
  }
}

/** A short, single-line description of any thrown value, including the network cause fetch() hides. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    const code = (err as Error & { code?: unknown }).code;
    if (cause instanceof Error) {
      const causeCode = (cause as Error & { code?: unknown }).code;
      return `${err.message} (${typeof causeCode === "string" ? causeCode : cause.message})`;
    }
    if (cause && typeof cause === "object" && "code" in cause) return `${err.message} (${String(cause.code)})`;
    return typeof code === "string" && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
