/** Markdown report of bench/delta.ts: one table per scenario, its targets from issue 3 with ✓/✗. */
import { MB } from './lib.js';
import type { RefFigure, RefKey, ScenarioId } from './delta-refs.js';

/** One snapyard scenario, combined over runs: best time, worst bytes and RSS. */
export interface SnapFigure {
  seconds: number;
  up: number;
  down: number;
  clientRss: number;
  serverRss: number;
  /** Pushes: growth of the server's data directory. */
  storeGrowth?: number;
  /** Pulls: qemu-img compare against the original (null: not checked). */
  verified?: boolean | null;
  /** The JSON object the command printed. */
  summary?: Record<string, unknown> | null;
}

export type Refs = Partial<Record<RefKey, RefFigure>>;
export type Snaps = Partial<Record<ScenarioId, SnapFigure>>;

export const TITLES: Record<ScenarioId, string> = {
  A: 'A. push of games-v2 after games-v1 (server holds base-v1 and games-v1)',
  B: 'B. overlay pull of games-v2 over base-v1, client cache holding games-v1',
  C: 'C. overlay pull of games-v1 over base-v1, empty cache',
  D: 'D. store growth when the shuffled copy of games-v1 is pushed after games-v1',
  E: 'E. full pull of games-v2, empty cache',
};

const RSS_TARGET = 300 * MB;

export const b = (n: number | undefined) => n === undefined ? '' : Math.abs(n) < MB ? `${(n / 1e3).toFixed(1)} kB` : `${(n / MB).toFixed(2)} MB`;
const rss = (n: number | undefined) => n === undefined ? '' : `${(n / MB).toFixed(0)} MB`;
const s = (n: number | undefined) => n === undefined ? '' : `${n.toFixed(2)} s`;
const mark = (ok: boolean | undefined) => ok === undefined ? '–' : ok ? '✓' : '✗';

type Row = [string, string, string, string, string, string, string, string, string];

function snapRow(label: string, f: SnapFigure): Row {
  return [label, b(f.up), b(f.down), b(f.up + f.down), s(f.seconds), '', rss(f.clientRss), rss(f.serverRss),
    f.verified === undefined || f.verified === null ? '' : f.verified ? 'qemu-img compare: identical' : '**qemu-img compare: DIFFERS**'];
}

function refRow(label: string, r: RefFigure | undefined, what: string): Row[] {
  if (!r) return [];
  const note = [what, r.indexBytes !== undefined ? `+ ${b(r.indexBytes)} .caibx index` : ''].filter(Boolean).join(', ');
  return [[label, '', '', b(r.bytes), s(r.seconds), s(r.applySeconds), '', '', note]];
}

/** Targets of one scenario: [text, met?] (undefined: a figure is missing). */
function targets(id: ScenarioId, f: SnapFigure | undefined, refs: Refs): Array<[string, boolean | undefined]> {
  const total = f ? f.up + f.down : undefined;
  const le = (x: number | undefined, y: number | undefined) => x === undefined || y === undefined ? undefined : x <= y;
  const lt = (x: number | undefined, y: number | undefined) => x === undefined || y === undefined ? undefined : x < y;
  const t: Array<[string, boolean | undefined]> = [];
  const casyncG2 = refs['casync games-v2 after base-v1+games-v1'];
  if (id === 'A') t.push([`wire total ${b(total)} ≤ casync's new bytes ${b(casyncG2?.bytes)}`, le(total, casyncG2?.bytes)]);
  if (id === 'B') {
    const bar = refs['zstd patch base-v1→games-v2']?.applySeconds;
    t.push([`wire total ${b(total)} ≤ 2.00 MB (issue: casync 4.13 MB, zstd --patch-from 1.50 MB)`, le(total, 2.0 * MB)]);
    const g1 = refs['zstd patch games-v1→games-v2']?.applySeconds;
    t.push([`time ${s(f?.seconds)} < zstd -d --patch-from=base-v1 (→ games-v2) ${s(bar)}${g1 === undefined ? '' : ` (--patch-from=games-v1: ${s(g1)})`}`, lt(f?.seconds, bar)]);
  }
  if (id === 'C') t.push([`wire total ${b(total)} ≤ 65 MB (issue: casync 75.3 MB, patch-from 59.8 MB)`, le(total, 65 * MB)]);
  if (id === 'D') t.push([`store growth ${b(f?.storeGrowth)} ≤ 1 MB (issue: casync 126.9 MB)`, le(f?.storeGrowth, 1 * MB)]);
  t.push([`client peak RSS ${rss(f?.clientRss)} < 300 MB`, lt(f?.clientRss, RSS_TARGET)]);
  if (f?.verified === false) t.push(['pulled image identical to the original (qemu-img compare)', false]);
  return t;
}

function table(id: ScenarioId, f: SnapFigure | undefined, refs: Refs): Row[] {
  const rows: Row[] = [];
  const push = id === 'A' || id === 'D';
  if (f) {
    rows.push(snapRow(push ? 'snapyard push' : 'snapyard pull', f));
    if (f.storeGrowth !== undefined) rows.push(['snapyard store growth', '', '', b(f.storeGrowth), '', '', '', '', 'server data dir, before → after']);
  }
  const r = (k: RefKey) => refs[k];
  switch (id) {
    case 'A':
    case 'B':
      rows.push(...refRow('casync make games-v2', r('casync games-v2 after base-v1+games-v1'), 'new chunks (store holds base-v1, games-v1)'));
      rows.push(...refRow('zstd -3 --patch-from=games-v1', r('zstd patch games-v1→games-v2'), 'patch size; apply = zstd -d'));
      rows.push(...refRow('zstd -3 --patch-from=base-v1', r('zstd patch base-v1→games-v2'), 'patch size; apply = zstd -d'));
      break;
    case 'C':
      rows.push(...refRow('casync make games-v1', r('casync games-v1 after base-v1'), 'new chunks (store holds base-v1)'));
      rows.push(...refRow('zstd -3 --patch-from=base-v1', r('zstd patch base-v1→games-v1'), 'patch size; apply = zstd -d'));
      break;
    case 'D':
      rows.push(...refRow('casync make shuffled', r('casync shuffled after games-v1'), 'store growth'));
      rows.push(...refRow('zstd -3 --patch-from=games-v1', r('zstd patch games-v1→shuffled'), 'patch size; apply = zstd -d'));
      break;
    case 'E':
      rows.push(...refRow('casync make games-v2 alone', r('casync games-v2 alone'), 'whole store'));
      rows.push(...refRow('zstd -3 -T0 games-v2', r('zstd -3 -T0 games-v2'), 'apply = zstd -d'));
      break;
  }
  return rows;
}

export function markdown(only: ScenarioId[], snaps: Snaps, refs: Refs, header: string[], serverPeak: number | undefined, referencesOnly: boolean): string {
  const out: string[] = [...header, ''];
  for (const id of only) {
    const f = snaps[id];
    out.push(`### ${TITLES[id]}`, '');
    out.push('| | wire up | wire down | bytes | time | apply time | client peak RSS | server peak RSS | |');
    out.push('|---|--:|--:|--:|--:|--:|--:|--:|---|');
    for (const row of table(id, f, refs)) out.push(`| ${row.join(' | ')} |`);
    out.push('');
    if (!referencesOnly) {
      for (const [text, ok] of targets(id, f, refs)) out.push(`- ${mark(ok)} ${text}`);
      if (f?.summary) out.push(`- snapyard --json: \`${JSON.stringify(f.summary)}\``);
      out.push('');
    }
  }
  if (serverPeak !== undefined) out.push(`Server peak RSS over the whole run (VmHWM, setup pushes included): ${rss(serverPeak)}`);
  return out.join('\n');
}

/** Every target as {scenario, text, ok}, for --json. */
export function allTargets(only: ScenarioId[], snaps: Snaps, refs: Refs): Array<{ scenario: ScenarioId; target: string; ok: boolean | null }> {
  return only.flatMap((id) => targets(id, snaps[id], refs).map(([target, ok]) => ({ scenario: id, target, ok: ok ?? null })));
}
