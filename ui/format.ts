/** Sizes and times as the page shows them. */
export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export const ratio = (r: number | null | undefined): string => (r === null || r === undefined ? '–' : `${r.toFixed(2)}×`);

export const shortDigest = (d: string | null | undefined): string => (d ? d.replace(/^sha256:/, '').slice(0, 12) : '–');

export function time(iso: string | null | undefined): string {
  if (!iso) return '–';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
