import type { LoadProgress } from "./engine-types.ts";
import type { Logger } from "./log.ts";

// Feedback while the model is built/downloaded/loaded, which can take a while on first run. On a terminal:
// one self-rewriting bar on stderr. Otherwise (CI, pipes, tests): one log line per distinct load stage.

export interface LoadReporter {
  onProgress(p: LoadProgress): void;
  /** Clears the bar; call once loading ended (either way). */
  finish(): void;
}

export interface LoadReporterOptions {
  log: Logger;
  model: string;
  /** Draw the bar (stderr is a TTY and not --quiet). */
  tty: boolean;
  stream?: NodeJS.WriteStream;
}

const BAR_WIDTH = 24;
const REDRAW_MS = 80;

export function createLoadReporter(opts: LoadReporterOptions): LoadReporter {
  return opts.tty ? barReporter(opts) : lineReporter(opts);
}

function lineReporter({ log, model }: LoadReporterOptions): LoadReporter {
  // transformers.js reports every file (initiate/download/progress/done); in a log only the stages matter.
  const perFile = new Set(["initiate", "download", "progress", "progress_total", "done"]);
  const seen = new Set<string>();
  return {
    onProgress(p) {
      if (perFile.has(p.status) || seen.has(p.status)) return;
      seen.add(p.status);
      log.info(`model ${model}: ${p.status}${p.file ? ` ${p.file}` : ""}`, { status: p.status, file: p.file });
    },
    finish() {},
  };
}

function barReporter({ model, stream = process.stderr }: LoadReporterOptions): LoadReporter {
  let lastDraw = 0;
  let lastStatus = "";
  let drawn = false;
  const draw = (p: LoadProgress) => {
    const now = Date.now();
    if (p.status === lastStatus && now - lastDraw < REDRAW_MS) return;
    lastDraw = now;
    lastStatus = p.status;
    const pct = typeof p.progress === "number" && Number.isFinite(p.progress) ? Math.min(100, Math.max(0, p.progress)) : undefined;
    const filled = pct === undefined ? 0 : Math.round((pct / 100) * BAR_WIDTH);
    const bar = pct === undefined ? " ".repeat(BAR_WIDTH) : "#".repeat(filled) + "-".repeat(BAR_WIDTH - filled);
    const pctText = pct === undefined ? "    " : `${pct.toFixed(0).padStart(3)}%`;
    let line = `loading ${model} [${bar}] ${pctText} ${p.status}${p.file ? ` ${p.file}` : ""}`;
    const cols = stream.columns && stream.columns > 20 ? stream.columns : 100;
    if (line.length > cols - 1) line = line.slice(0, Math.max(10, cols - 2)) + "…";
    stream.write(`\r\x1b[2K${line}`);
    drawn = true;
  };
  return {
    onProgress: draw,
    finish() {
      if (drawn) stream.write("\r\x1b[2K");
      drawn = false;
    },
  };
}
