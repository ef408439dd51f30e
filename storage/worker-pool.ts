import { Worker } from 'node:worker_threads';
import { SnapyardError } from './errors.js';

interface Pending<Res> {
  resolve: (r: Res) => void;
  reject: (e: Error) => void;
}

/** What a worker posts for a failed task. */
export interface WorkerError {
  name?: string;
  message: string;
  code?: string;
  digest?: string;
}

interface Slot<Res> {
  worker: Worker;
  pending: Map<number, Pending<Res>>;
}

/**
 * A fixed set of worker threads running one module; each task is a message,
 * answered by {id, result} or {id, error}. Tasks go to the least busy worker.
 * Used to move CPU-bound work (hashing, zstd) off the event loop: zstd-napi is
 * synchronous.
 */
export class WorkerPool<Req, Res> {
  private readonly slots: Slot<Res>[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    moduleUrl: URL,
    size: number,
    workerData: unknown,
    /** Turns a worker's error back into a typed error. */
    private readonly revive: (e: WorkerError) => Error = (e) => new SnapyardError('INTERNAL', e.message),
  ) {
    // Running from TypeScript sources (tsx, vitest): let the worker load .ts too.
    const fromSource = moduleUrl.pathname.endsWith('.ts');
    for (let i = 0; i < size; i++) {
      const worker = fromSource
        ? new Worker(tsxBootstrap(moduleUrl), { eval: true, workerData })
        : new Worker(moduleUrl, { workerData });
      const slot: Slot<Res> = { worker, pending: new Map() };
      worker.on('message', (msg: { id: number; result?: Res; error?: WorkerError }) => {
        const p = slot.pending.get(msg.id);
        if (!p) return;
        slot.pending.delete(msg.id);
        if (slot.pending.size === 0 && !this.closed) worker.unref(); // closing: referenced until it has exited (close())
        if (msg.error) p.reject(this.revive(msg.error));
        else p.resolve(msg.result as Res);
      });
      worker.on('error', (e) => this.failAll(slot, e));
      worker.on('exit', (code) => {
        if (!this.closed) this.failAll(slot, new SnapyardError('INTERNAL', `worker exited with code ${code}`));
      });
      worker.unref(); // referenced only while it has work, so an idle pool never holds the process open
      this.slots.push(slot);
    }
  }

  get size(): number {
    return this.slots.length;
  }

  /** Tasks sent and not yet answered, over all workers. */
  get queued(): number {
    let n = 0;
    for (const s of this.slots) n += s.pending.size;
    return n;
  }

  run(req: Req, transfer: ArrayBuffer[] = []): Promise<Res> {
    let best = this.slots[0]!;
    for (const s of this.slots) if (s.pending.size < best.pending.size) best = s;
    return this.runOn(best, req, transfer);
  }

  /** Runs a task on one given worker (0 <= slot < size): for work that keeps state in a worker. */
  runAt(slot: number, req: Req, transfer: ArrayBuffer[] = []): Promise<Res> {
    return this.runOn(this.slots[slot % this.slots.length]!, req, transfer);
  }

  /** Runs the same task on every worker. */
  broadcast(req: Req): Promise<Res[]> {
    return Promise.all(this.slots.map((s) => this.runOn(s, req, [])));
  }

  private runOn(best: Slot<Res>, req: Req, transfer: ArrayBuffer[]): Promise<Res> {
    if (this.closed) return Promise.reject(new SnapyardError('INTERNAL', 'worker pool is closed'));
    const id = this.nextId++;
    return new Promise<Res>((resolve, reject) => {
      if (best.pending.size === 0) best.worker.ref();
      best.pending.set(id, { resolve, reject });
      best.worker.postMessage({ id, req }, transfer);
    });
  }

  private failAll(slot: Slot<Res>, e: Error): void {
    for (const p of slot.pending.values()) p.reject(e);
    slot.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    // Referenced until they have exited (a reply arriving meanwhile does not unreference them): an idle
    // worker's exit does not keep the event loop alive, so a caller awaiting close() with nothing else
    // pending saw the process end first (a pull failing on a corrupt chunk, its other batches' tasks still
    // answering, ended "left waiting" instead of with its error: test/pull-corrupt-chunk.test.ts).
    await Promise.all(this.slots.map((s) => {
      s.worker.ref();
      return s.worker.terminate();
    }));
  }
}

/** Worker source that registers tsx, then loads a TypeScript module (dev and tests only). */
function tsxBootstrap(moduleUrl: URL): string {
  const api = import.meta.resolve('tsx/esm/api');
  return `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
}
