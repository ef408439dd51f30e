import type { Qcow2Header } from '../qcow2/format.js';
import { chunkListStats } from './chunk-stats.js';
import { EXTENT_DATA, type Qcow2Index } from './qcow2-index.js';

/**
 * What `snapyard inspect REF` reports of a stored qcow2 image (also the admin
 * API's snapshot page): its header (the first cluster), allocation from the
 * chunk index's guest layout, and chunk statistics.
 */
export function qcow2IndexFacts(h: Qcow2Header, ix: Qcow2Index) {
  const L = ix.layout;
  let allocatedBytes = 0;
  let zeroBytes = 0;
  for (let i = 0; i < L.extentKinds.length; i++) {
    if (L.extentKinds[i] === EXTENT_DATA) allocatedBytes += L.extentLengths[i]!;
    else zeroBytes += L.extentLengths[i]!;
  }
  return {
    format: 'qcow2',
    version: h.version,
    virtualSize: L.virtualSize,
    clusterSize: L.clusterSize,
    fileSize: ix.size,
    backingFile: h.backingFile ?? null,
    backingFormat: h.backingFormat ?? null,
    compressionType: h.compressionType,
    extendedL2: h.extendedL2,
    dirty: h.dirty,
    allocatedBytes,
    zeroBytes,
    unallocatedBytes: L.virtualSize - allocatedBytes - zeroBytes,
    snapshots: { count: h.nbSnapshots },
    chunks: { ...chunkListStats([ix.data]), residue: { count: ix.residue.count, bytes: ix.residue.total } },
  };
}
