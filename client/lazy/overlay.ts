/**
 * The qcow2 overlay QEMU writes to over a lazy mount: backing file the NBD
 * export (`nbd+unix:///?socket=PATH`, format raw), so guest writes stay in
 * the local file. An existing overlay is reused when it already has that
 * backing file and was made over the same snapshot (its sidecar
 * `<file>.snapyard.json`, as pod-init keeps for its overlays, names the
 * blob): the same export path may serve another snapshot later (a tag
 * moved), and writes made over one disk must never be laid over another.
 * Anything else is refused (CONFLICT) and left as it is.
 */
import { existsSync } from 'node:fs';
import { SnapyardError } from '../../storage/errors.js';
import { Qcow2Image } from '../../storage/qcow2/reader.js';
import { Qcow2Writer } from '../../storage/qcow2/writer.js';
import type { Digest } from '../../storage/digest.js';
import { readSidecar, sidecarPath, writeSidecar, type OverlaySidecar } from '../pod-init/sidecar.js';

export type OverlayAction = 'created' | 'reused';

export async function ensureNbdOverlay(path: string, backing: string, virtualSize: number, blob: Digest): Promise<OverlayAction> {
  if (existsSync(path)) {
    let current: string | undefined;
    let format: string | undefined;
    try {
      const img = Qcow2Image.open(path);
      current = img.backingFile;
      format = img.backingFormat;
      img.close();
    } catch (e) {
      throw new SnapyardError('CONFLICT', `--overlay ${path} exists and is not a qcow2 image this mount can reuse: ${(e as Error).message}`);
    }
    if (current === backing && (format === undefined || format === 'raw')) {
      const made = readSidecar<OverlaySidecar>(path, 'overlay');
      if (made?.parentBlob === blob) return 'reused';
      throw new SnapyardError('CONFLICT', `--overlay ${path} was made over ${made ? made.parentBlob : 'an unknown snapshot (no ' + sidecarPath(path) + ')'}, the export now serves ${blob}: its writes belong to another disk; remove it to start afresh`);
    }
    throw new SnapyardError('CONFLICT', `--overlay ${path} exists over another backing file (${current ?? 'none'}), not ${backing}: remove it or pick another path`);
  }
  if (virtualSize % 512 !== 0) throw new SnapyardError('INVALID_ARGUMENT', `the export's size (${virtualSize} bytes) is not a multiple of 512: no qcow2 overlay can sit on it`);
  const w = await Qcow2Writer.create(path, { virtualSize, backingFile: backing, backingFormat: 'raw' });
  // The sidecar first: an overlay never exists without it (one left without its overlay is rewritten next time).
  writeSidecar(path, { kind: 'overlay', parent: backing, parentBlob: blob, created: new Date().toISOString() });
  await w.finish(); // temp file, fsync, rename (removed on failure)
  return 'created';
}
