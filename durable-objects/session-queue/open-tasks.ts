import type { OpenTask } from "./task.ts";

/** A reservation the router neither used nor gave back (it failed between the calls) lapses after this. */
export const RESERVATION_TTL_MS = 10 * 60_000;

// A SessionQueue's open tasks in memory: the tasks themselves, the queue of those still short of replicas
// (oldest first), the deposit tokens they hold, and task ids — this object is their only writer, so the next id
// is known without reading storage.

export class OpenTasks {
  private readonly tasks = new Map<number, OpenTask>();
  private queue: number[] = [];
  /** Deposit tokens held by open tasks until they finish. */
  reservedTokens = 0;
  private nextId: number;
  /** Ids handed out by reserveId() and not yet used, with when (memory only: after an eviction they are refused). */
  private readonly reservedIds = new Map<number, number>();

  constructor(lastId: number) {
    this.nextId = lastId + 1;
  }

  get(id: number): OpenTask | undefined {
    return this.tasks.get(id);
  }

  has(id: number): boolean {
    return this.tasks.has(id);
  }

  get size(): number {
    return this.tasks.size;
  }

  values(): IterableIterator<OpenTask> {
    return this.tasks.values();
  }

  /** A copy, for loops that may finish tasks as they go. */
  list(): OpenTask[] {
    return [...this.tasks.values()];
  }

  /** A new or restored task: it holds its tokens and waits for replicas. */
  add(task: OpenTask): void {
    this.tasks.set(task.id, task);
    this.reservedTokens += task.reservedTokens;
    this.queue.push(task.id);
  }

  /** A finished task gives its tokens back. */
  remove(task: OpenTask): void {
    this.tasks.delete(task.id);
    this.unqueue(task.id);
    this.reservedTokens -= task.reservedTokens;
  }

  /** The task needs a replica again (one dropped out). */
  requeue(id: number): void {
    if (!this.queue.includes(id)) this.queue.push(id);
  }

  unqueue(id: number): void {
    this.queue = this.queue.filter((x) => x !== id);
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Offers each queued open task to `fill`, oldest first; those it leaves short stay queued. */
  fillQueued(fill: (task: OpenTask) => boolean): void {
    const still: number[] = [];
    for (const id of this.queue) {
      const task = this.tasks.get(id);
      if (task && fill(task)) still.push(id);
    }
    this.queue = still;
  }

  /** An id for a task the router stores a payload for before submitting it; lapsed reservations go. */
  reserveId(now = Date.now()): number {
    for (const [old, at] of this.reservedIds) {
      if (now - at < RESERVATION_TTL_MS) break; // in order of reservation: the rest are younger
      this.reservedIds.delete(old);
    }
    const id = this.nextId++;
    this.reservedIds.set(id, now);
    return id;
  }

  /** Uses (or gives back) a reservation, once, whatever the outcome; false when the id is not reserved (any more). */
  takeReservedId(id: number): boolean {
    return this.reservedIds.delete(id);
  }

  newId(): number {
    return this.nextId++;
  }
}
