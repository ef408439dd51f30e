/**
 * The casync and zstd --patch-from reference figures for bench/delta.ts, taken in
 * the same run as the snapyard figures.
 *
 * casync: one store that receives the images in the order the snapyard server
 * does (base-v1, games-v1, games-v2, then the shuffled copy); an image's "new
 * bytes" are the growth of the store (its chunk files) when it is made into it:
 * what a client holding the earlier images would fetch (plus the .caibx index,
 * reported apart). The full figure for E is a fresh store of games-v2 alone.
 * zstd: `zstd -3 --long=31 --patch-from=OLD NEW` (--long=31: a 1 GB reference
 * needs a window beyond the decoder's default 128 MB limit), its size, and the
 * time of `zstd -d --long=31 --patch-from=OLD` applying it to a file.
 */
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { duBytes, timedCmd } from './lib.js';

/** Same chunking and compression as bench/ingest-get.ts and bench/store-size.ts. */
export const CASYNC_ARGS = ['--compression=zstd', '--chunk-size=16384:65536:262144'];

export interface RefFigure {
  /** Store growth (casync), patch or compressed size (zstd). */
  bytes: number;
  /** make / compress time */
  seconds: number;
  /** zstd: decompression (patch application) time; casync: unset. */
  applySeconds?: number;
  /** casync: size of the .caibx index (a client needs it too). */
  indexBytes?: number;
}

export type Images = Record<'base' | 'g1' | 'g2' | 'shuffled', string>;
export type ScenarioId = 'A' | 'B' | 'C' | 'D' | 'E';

/** casync make IMAGE into STORE: growth of the store and time. */
export function casyncMake(store: string, index: string, image: string): RefFigure {
  const before = existsSync(store) ? duBytes(store) : 0;
  const seconds = timedCmd('casync', ['make', ...CASYNC_ARGS, `--store=${store}`, index, image]);
  return { bytes: duBytes(store) - before, seconds, indexBytes: statSync(index).size };
}

/** zstd -3 --patch-from=OLD NEW, then applying the patch to OLD into a scratch file (deleted). */
export function zstdPatch(dir: string, name: string, old: string, nu: string): RefFigure {
  const patch = join(dir, `${name}.zst`);
  const out = join(dir, `${name}.out`);
  const seconds = timedCmd('zstd', ['-q', '-f', '-3', '--long=31', `--patch-from=${old}`, nu, '-o', patch]);
  const applySeconds = timedCmd('zstd', ['-q', '-f', '-d', '--long=31', `--patch-from=${old}`, patch, '-o', out]);
  rmSync(out, { force: true });
  const bytes = statSync(patch).size;
  rmSync(patch, { force: true });
  return { bytes, seconds, applySeconds };
}

/** zstd -3 -T0 of the whole file, and its decompression into a scratch file. */
export function zstdFull(dir: string, name: string, file: string): RefFigure {
  const z = join(dir, `${name}.zst`);
  const out = join(dir, `${name}.out`);
  const seconds = timedCmd('zstd', ['-q', '-f', '-3', '-T0', file, '-o', z]);
  const applySeconds = timedCmd('zstd', ['-q', '-f', '-d', z, '-o', out]);
  rmSync(out, { force: true });
  const bytes = statSync(z).size;
  rmSync(z, { force: true });
  return { bytes, seconds, applySeconds };
}

/** Reference keys, what they measure, and the scenarios that show them. */
export const REFS = {
  'casync games-v1 after base-v1': ['C'],
  'casync games-v2 after base-v1+games-v1': ['A', 'B'],
  'casync shuffled after games-v1': ['D'],
  'casync games-v2 alone': ['E'],
  'zstd patch base-v1→games-v2': ['A', 'B'],
  'zstd patch games-v1→games-v2': ['A', 'B'],
  'zstd patch base-v1→games-v1': ['C'],
  'zstd patch games-v1→shuffled': ['D'],
  'zstd -3 -T0 games-v2': ['E'],
} as const satisfies Record<string, readonly ScenarioId[]>;
export type RefKey = keyof typeof REFS;

/** Runs the references the selected scenarios need (casync in snapyard's push order), logging to stderr. */
export function runReferences(tmp: string, img: Images, only: Set<ScenarioId>, log: (s: string) => void): Partial<Record<RefKey, RefFigure>> {
  const r: Partial<Record<RefKey, RefFigure>> = {};
  const want = (k: RefKey) => REFS[k].some((s) => only.has(s));
  const step = (k: RefKey, fn: () => RefFigure) => {
    log(`  ${k} ...`);
    r[k] = fn();
    log(`  ${k}: ${(r[k]!.bytes / 1e6).toFixed(2)} MB, ${r[k]!.seconds.toFixed(2)} s${r[k]!.applySeconds !== undefined ? `, apply ${r[k]!.applySeconds!.toFixed(2)} s` : ''}`);
  };
  const store = join(tmp, 'castr');
  const idx = (n: string) => join(tmp, `${n}.caibx`);
  if (['A', 'B', 'C', 'D'].some((s) => only.has(s as ScenarioId))) {
    step('casync games-v1 after base-v1', () => {
      casyncMake(store, idx('base-v1'), img.base);
      return casyncMake(store, idx('games-v1'), img.g1);
    });
    // The snapyard server holds games-v2 before D whenever A, B or E ran: so does the casync store.
    if (want('casync games-v2 after base-v1+games-v1') || (only.has('D') && only.has('E'))) {
      step('casync games-v2 after base-v1+games-v1', () => casyncMake(store, idx('games-v2'), img.g2));
    }
    if (want('casync shuffled after games-v1')) step('casync shuffled after games-v1', () => casyncMake(store, idx('shuffled'), img.shuffled));
  }
  if (want('casync games-v2 alone')) step('casync games-v2 alone', () => casyncMake(join(tmp, 'castr-alone'), idx('games-v2-alone'), img.g2));
  rmSync(store, { recursive: true, force: true });
  rmSync(join(tmp, 'castr-alone'), { recursive: true, force: true });
  if (want('zstd patch base-v1→games-v2')) step('zstd patch base-v1→games-v2', () => zstdPatch(tmp, 'p-base-g2', img.base, img.g2));
  if (want('zstd patch games-v1→games-v2')) step('zstd patch games-v1→games-v2', () => zstdPatch(tmp, 'p-g1-g2', img.g1, img.g2));
  if (want('zstd patch base-v1→games-v1')) step('zstd patch base-v1→games-v1', () => zstdPatch(tmp, 'p-base-g1', img.base, img.g1));
  if (want('zstd patch games-v1→shuffled')) step('zstd patch games-v1→shuffled', () => zstdPatch(tmp, 'p-g1-shuf', img.g1, img.shuffled));
  if (want('zstd -3 -T0 games-v2')) step('zstd -3 -T0 games-v2', () => zstdFull(tmp, 'full-g2', img.g2));
  return r;
}
