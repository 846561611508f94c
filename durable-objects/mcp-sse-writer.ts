// The write side of one legacy MCP stream (HTTP+SSE, protocol 2024-11-05): `event: endpoint` naming where to
// POST, then one `event: message` frame per JSON-RPC message, and a comment line now and then so that proxies
// and clients see a live connection. It is held by the session's Durable Object, which every POST of the
// session reaches wherever it lands, and handed to the Worker as the readable end (RPC streams it).

/** Keep-alive comment interval: under the idle cut of common proxies (60 s) with room to spare. */
export const KEEP_ALIVE_MS = 15_000;
/** Bytes written but not yet taken by a slow or stalled client before the stream is dropped (memory bound). */
export const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

const encoder = new TextEncoder();

export class SseWriter {
  readonly readable: ReadableStream<Uint8Array>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly onEnd: () => void;
  private buffered = 0;
  private ended = false;

  /** `onEnd` runs once, when the client goes away, a write fails, the client falls too far behind, or `end()`. */
  constructor(endpoint: string, onEnd: () => void) {
    this.onEnd = onEnd;
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    this.readable = readable;
    this.writer = writable.getWriter();
    // The reader cancelling (the client disconnected) errors the writable side.
    this.writer.closed.then(
      () => this.end(),
      () => this.end(),
    );
    this.write(`event: endpoint\ndata: ${endpoint}\n\n`);
    this.timer = setInterval(() => this.comment("keep-alive"), KEEP_ALIVE_MS);
  }

  get open(): boolean {
    return !this.ended;
  }

  /** One JSON-RPC message (already serialised: JSON.stringify never emits a raw newline). */
  message(json: string): boolean {
    return this.write(`event: message\ndata: ${json}\n\n`);
  }

  /** A comment line: ignored by clients, it keeps the connection alive and finds a client that has gone. */
  comment(text: string): boolean {
    return this.write(`: ${text}\n\n`);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.timer);
    this.writer.close().catch(() => {});
    this.onEnd();
  }

  private write(text: string): boolean {
    if (this.ended) return false;
    const bytes = encoder.encode(text);
    if (this.buffered + bytes.byteLength > MAX_BUFFERED_BYTES) {
      this.end();
      return false;
    }
    this.buffered += bytes.byteLength;
    this.writer.write(bytes).then(
      () => void (this.buffered -= bytes.byteLength),
      () => this.end(),
    );
    return true;
  }
}
