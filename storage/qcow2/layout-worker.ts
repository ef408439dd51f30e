/**
 * Worker thread for layout-plan.ts's planOffThread: walks a qcow2 file's
 * tables (planLayoutOf) and sends the plan back, its typed arrays
 * transferred. Errors go back with their stable code (QCOW2_INVALID).
 */
import { parentPort } from 'node:worker_threads';
import { isSnapyardError } from '../errors.js';
import type { WorkerError } from '../worker-pool.js';
import { planBuffers, planLayoutOf } from './layout-plan.js';

parentPort!.on('message', ({ id, req }: { id: number; req: { path: string } }) => {
  try {
    const plan = planLayoutOf(req.path);
    parentPort!.postMessage({ id, result: plan }, planBuffers(plan));
  } catch (e) {
    const error: WorkerError = { message: e instanceof Error ? e.message : String(e) };
    if (isSnapyardError(e)) error.code = e.code;
    parentPort!.postMessage({ id, error });
  }
});
