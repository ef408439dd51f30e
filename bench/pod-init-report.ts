/** bench/pod-init.ts's figures and their one-line-each report. */
import { MB } from './lib.js';

export interface Figure {
  id: string;
  name: string;
  unit: 'bytes' | 's' | 'count';
  value: number;
  /** The reference measured in the same run (null: none, see referenceName). */
  reference: number | null;
  referenceName: string;
  goal: string;
  pass: boolean;
  detail?: Record<string, unknown>;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function show(unit: Figure['unit'], v: number): string {
  if (unit === 'bytes') return v < MB ? `${v} B` : `${(v / MB).toFixed(2)} MB`;
  if (unit === 's') return `${v.toFixed(3)} s`;
  return String(v);
}

/** `id  name  measured  reference (what)  ratio  goal  PASS|FAIL`, aligned. */
export function figureLines(figures: Figure[]): string[] {
  const rows = figures.map((f) => [
    f.id,
    f.name,
    show(f.unit, f.value),
    f.reference === null ? f.referenceName : `${show(f.unit, f.reference)} (${f.referenceName})`,
    f.reference ? `${(f.value / f.reference).toFixed(3)}x` : '-',
    f.goal,
    f.pass ? 'PASS' : 'FAIL',
  ]);
  const head = ['fig', 'figure', 'measured', 'reference', 'ratio', 'goal', 'result'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(head), ...rows.map(line)];
}
