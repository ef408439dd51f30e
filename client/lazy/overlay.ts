/**
 * The qcow2 overlay QEMU writes to over a lazy mount: backing file the NBD
 * export (`nbd+unix:///?socket=PATH`, format raw), so guest writes stay in
 * the local file. An existing overlay is reused when it already has that
 * backing file (pod-init's persistent mode); one over anything else is
 * refused and left as it is.
 */
import { existsSync } from 'node:fs';
import { SnapyardError } from '../../storage/errors.js';
import { Qcow2Image } from '../../storage/qcow2/reader.js';
import { Qcow2Writer } from '../../storage/qcow2/writer.js';

export type OverlayAction = 'created' | 'reused';

export async function ensureNbdOverlay(path: string, backing: string, virtualSize: number): Promise<OverlayAction> {
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
    if (current === backing && (format === undefined || format === 'raw')) return 'reused';
    throw new SnapyardError('CONFLICT', `--overlay ${path} exists over another backing file (${current ?? 'none'}), not ${backing}: remove it or pick another path`);
  }
  if (virtualSize % 512 !== 0) throw new SnapyardError('INVALID_ARGUMENT', `the export's size (${virtualSize} bytes) is not a multiple of 512: no qcow2 overlay can sit on it`);
  const w = await Qcow2Writer.create(path, { virtualSize, backingFile: backing, backingFormat: 'raw' });
  await w.finish(); // temp file, fsync, rename (removed on failure)
  return 'created';
}
