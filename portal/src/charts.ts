// Small SVG charts (no library): a line over time and horizontal bars. Each has a text title and description for
// screen readers; the numbers are also in the page's tables.

const NS = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function frame(title: string, desc: string, w: number, hgt: number): SVGElement {
  const root = svg("svg", { viewBox: `0 0 ${w} ${hgt}`, role: "img", class: "chart", "aria-label": title });
  root.append(svg("title", {}, title), svg("desc", {}, desc));
  return root;
}

/** A line of (x, y) points, x in ms since epoch; `yLabel` names the unit. */
export function lineChart(title: string, points: [number, number][], yLabel: string): SVGElement {
  const w = 600;
  const hgt = 180;
  const pad = 36;
  const root = frame(title, `${points.length} points of ${yLabel}`, w, hgt);
  if (points.length === 0) {
    root.append(svg("text", { x: w / 2, y: hgt / 2, "text-anchor": "middle", class: "muted" }, "no data yet"));
    return root;
  }
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys, 1e-9)];
  const X = (x: number) => pad + ((x - x0) / (x1 - x0 || 1)) * (w - 2 * pad);
  const Y = (y: number) => hgt - pad + -((y - y0) / (y1 - y0 || 1)) * (hgt - 2 * pad);
  root.append(
    svg("line", { x1: pad, y1: hgt - pad, x2: w - pad, y2: hgt - pad, class: "axis" }),
    svg("line", { x1: pad, y1: pad, x2: pad, y2: hgt - pad, class: "axis" }),
    svg("text", { x: 4, y: pad - 8, class: "tick" }, `${round(y1)} ${yLabel}`),
    svg("text", { x: 4, y: hgt - pad + 4, class: "tick" }, String(round(y0))),
    svg("text", { x: pad, y: hgt - 8, class: "tick" }, new Date(x0).toLocaleTimeString("en-GB")),
    svg("text", { x: w - pad, y: hgt - 8, class: "tick", "text-anchor": "end" }, new Date(x1).toLocaleTimeString("en-GB")),
    svg("polyline", { points: points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" "), class: "line" }),
  );
  for (const [x, y] of points.slice(-60)) root.append(svg("circle", { cx: X(x).toFixed(1), cy: Y(y).toFixed(1), r: 2.5, class: "dot" }));
  return root;
}

const round = (n: number) => (Math.abs(n) >= 100 ? Math.round(n) : Math.round(n * 1000) / 1000);

/** One bar per label; `mark` draws a vertical threshold line (e.g. the dispersion threshold). */
export function barChart(title: string, bars: [string, number][], unit: string, mark?: number): SVGElement {
  const w = 600;
  const row = 24;
  const left = 150;
  const hgt = bars.length * row + 30;
  const root = frame(title, bars.map(([k, v]) => `${k}: ${round(v)} ${unit}`).join("; ") || "no data", w, hgt);
  const max = Math.max(mark ?? 0, ...bars.map((b) => b[1]), 1e-9);
  const X = (v: number) => left + (v / max) * (w - left - 60);
  bars.forEach(([label, v], i) => {
    const y = 8 + i * row;
    root.append(
      svg("text", { x: 4, y: y + 14, class: "tick" }, label),
      svg("rect", { x: left, y, width: Math.max(1, X(v) - left).toFixed(1), height: row - 8, class: "bar" }),
      svg("text", { x: X(v) + 4, y: y + 14, class: "tick" }, `${round(v)} ${unit}`),
    );
  });
  if (mark !== undefined)
    root.append(
      svg("line", { x1: X(mark), y1: 2, x2: X(mark), y2: hgt - 20, class: "mark" }),
      svg("text", { x: X(mark), y: hgt - 6, class: "tick", "text-anchor": "middle" }, `threshold ${round(mark)}`),
    );
  return root;
}
