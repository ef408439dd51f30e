/**
 * Which tar member of an image is its disk: `--path P` when given, else the
 * places the old emulator images put it, best first:
 * /snapshot.qcow2, /<tag>.qcow2, /emulator-snapshot/*.qcow2, /opt/builtin-images/*.builtin.
 */
export type MemberRule = { exact: string } | { dir: string; suffix: string };

export function memberRules(tag: string | null, path: string | undefined): MemberRule[] {
  if (path !== undefined) return [{ exact: path.replace(/^(\.\/|\/)+/, '') }];
  return [
    { exact: 'snapshot.qcow2' },
    ...(tag ? [{ exact: `${tag}.qcow2` }] : []),
    { dir: 'emulator-snapshot/', suffix: '.qcow2' },
    { dir: 'opt/builtin-images/', suffix: '.builtin' },
  ];
}

/** The index of the first rule `path` matches (lower is better), or -1. */
export function memberRank(path: string, rules: MemberRule[]): number {
  return rules.findIndex((r) => {
    if ('exact' in r) return path === r.exact;
    const rest = path.startsWith(r.dir) ? path.slice(r.dir.length) : null;
    return rest !== null && rest.length > r.suffix.length && !rest.includes('/') && rest.endsWith(r.suffix);
  });
}

export function describeRules(rules: MemberRule[]): string {
  return rules.map((r) => ('exact' in r ? `/${r.exact}` : `/${r.dir}*${r.suffix}`)).join(', ');
}
