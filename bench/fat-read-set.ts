/**
 * A boot-like read set of a corpus image (issue 13's bench): the guest byte
 * ranges of the FAT (first copy), the root directory and every directory and
 * file under `\WINDOWS`, in that order (directories before their files),
 * found by walking the FAT32 filesystem of the image's first partition
 * (through storage/qcow2/reader.ts). Neighbouring ranges are merged.
 */
import { SnapyardError } from '../storage/errors.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';

export type Range = [offset: number, length: number];

const END_OF_CHAIN = 0x0ffffff8;

export function bootReadSet(image: string, folder = 'WINDOWS'): Range[] {
  const img = Qcow2Image.open(image);
  try {
    const mbr = img.readGuest(0, 512);
    const p = mbr.readUInt32LE(446 + 8) * 512; // first partition's start
    const bs = img.readGuest(p, 512);
    const bps = bs.readUInt16LE(11);
    const spc = bs.readUInt8(13);
    const reserved = bs.readUInt16LE(14);
    const nfats = bs.readUInt8(16);
    const fatSectors = bs.readUInt32LE(36);
    if (bs.readUInt16LE(22) !== 0 || fatSectors === 0) throw new SnapyardError('INVALID_ARGUMENT', `${image}: the first partition is not FAT32`);
    const fatStart = p + reserved * bps;
    const fatBytes = fatSectors * bps;
    const fat = img.readGuest(fatStart, fatBytes);
    const clusterBytes = spc * bps;
    const dataStart = fatStart + nfats * fatBytes;
    const at = (c: number) => dataStart + (c - 2) * clusterBytes;
    const chain = (first: number): number[] => {
      const out: number[] = [];
      for (let c = first; c >= 2 && c < END_OF_CHAIN && out.length < fat.length / 4; c = fat.readUInt32LE(c * 4) & 0x0fffffff) out.push(c);
      return out;
    };
    const ranges: Range[] = [[fatStart, fatBytes]];
    const add = (clusters: number[], bytes = clusters.length * clusterBytes) => {
      let left = bytes;
      for (const c of clusters) {
        if (left <= 0) break;
        const n = Math.min(clusterBytes, left);
        const last = ranges[ranges.length - 1]!;
        if (last[0] + last[1] === at(c)) last[1] += n;
        else ranges.push([at(c), n]);
        left -= n;
      }
    };
    const entries = (clusters: number[]) => {
      const out: Array<{ name: string; dir: boolean; first: number; size: number }> = [];
      for (const c of clusters) {
        const b = img.readGuest(at(c), clusterBytes);
        for (let o = 0; o < b.length; o += 32) {
          const b0 = b[o]!;
          if (b0 === 0) return out;
          const attr = b[o + 11]!;
          if (b0 === 0xe5 || attr === 0x0f || attr & 0x08) continue;
          const name = b.toString('latin1', o, o + 11);
          if (name.startsWith('.')) continue;
          out.push({ name: name.slice(0, 8).trimEnd() + (name.slice(8).trim() ? `.${name.slice(8).trim()}` : ''), dir: (attr & 0x10) !== 0, first: (b.readUInt16LE(o + 20) << 16) | b.readUInt16LE(o + 26), size: b.readUInt32LE(o + 28) });
        }
      }
      return out;
    };
    const root = chain(bs.readUInt32LE(44));
    add(root);
    const top = entries(root).find((e) => e.dir && e.name === folder);
    if (!top) throw new SnapyardError('INVALID_ARGUMENT', `${image}: no \\${folder} folder`);
    const walk = (first: number) => {
      const clusters = chain(first);
      add(clusters);
      const list = entries(clusters);
      for (const e of list) if (!e.dir && e.size > 0) add(chain(e.first), e.size);
      for (const e of list) if (e.dir) walk(e.first);
    };
    walk(top.first);
    return ranges;
  } finally {
    img.close();
  }
}
