import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { SERVICES, stopService, stopServiceSync } from './helpers/service-scripts.js';

const BASE = '/var/tmp';
const PREFIX = 'snapyard-vitest-services.';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stops the services of a run directory and removes it. */
async function stopRun(dir: string): Promise<void> {
  for (const spec of Object.values(SERVICES)) {
    if (existsSync(join(dir, spec.name))) await stopService(spec, join(dir, spec.name));
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * A directory for this run's S3 and PostgreSQL services (test/helpers/services.ts
 * starts them there on first use, when scripts/test.sh has not), stopped and
 * removed when the run ends. Run directories of vitest processes that died
 * without their teardown (kill -9) are cleaned up first, daemons included.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  for (const name of readdirSync(BASE)) {
    const m = /^snapyard-vitest-services\.(\d+)\./.exec(name);
    if (m && !alive(Number(m[1]))) await stopRun(join(BASE, name)).catch((e) => process.stderr.write(`services: cleaning ${name}: ${e}\n`));
  }
  const dir = mkdtempSync(join(BASE, `${PREFIX}${process.pid}.`));
  chmodSync(dir, 0o755); // PostgreSQL runs as the postgres user, under this directory
  project.provide('snapyardServicesRun', dir);
  // An interrupted run (Ctrl-C) exits without the teardown below: stop the services on the way out.
  const onExit = () => {
    for (const spec of Object.values(SERVICES)) if (existsSync(join(dir, spec.name))) stopServiceSync(spec, join(dir, spec.name));
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  return async () => {
    process.off('exit', onExit);
    await stopRun(dir);
  };
}
