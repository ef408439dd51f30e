/** `snapyard ls [REPO]` and `snapyard stats [REPO]`. */
import type { RegistryFlags } from './registry-options.js';
import { human, print, printJson, short, table, withAdmin } from './admin-util.js';

export async function lsCommand(repo: string | undefined, o: RegistryFlags & { json?: boolean }): Promise<void> {
  await withAdmin(o, async (a) => {
    if (repo === undefined) {
      const repos = await a.repositories();
      if (o.json) return printJson(repos);
      print(table([['REPOSITORY', 'SNAPSHOTS', 'TAGS', 'CREATED'], ...repos.map((r) => [r.name, String(r.snapshots), String(r.tags), r.created])]));
      return;
    }
    const snaps = await a.snapshots(repo);
    if (o.json) return printJson(snaps);
    const rows = snaps.map((s) => [
      s.tags.join(',') || '-',
      short(s.digest),
      human(s.virtualSize),
      human(s.size),
      human(s.storedBytes),
      s.created,
      s.base ? `${s.base.subject ? `subject ${short(s.base.subject)}` : ''}${s.base.subject && s.base.blob ? ', ' : ''}${s.base.blob ? `blob ${short(s.base.blob)}` : ''}` : '-',
    ]);
    print(table([['TAGS', 'DIGEST', 'VIRTUAL', 'SIZE', 'STORED', 'CREATED', 'BASE'], ...rows]));
  });
}

export async function statsCommand(repo: string | undefined, o: RegistryFlags & { json?: boolean }): Promise<void> {
  await withAdmin(o, async (a) => {
    if (repo === undefined) {
      const s = await a.registryStats();
      if (o.json) return printJson(s);
      print(`logical ${human(s.logicalBytes)}, stored ${human(s.storedBytes)}, dedup ratio ${s.dedupRatio ?? '-'}`);
      print(`chunk store: ${s.store.chunks} chunks, ${human(s.store.storedBytes)} stored (${human(s.store.rawBytes)} raw), unreferenced data included until gc`);
      const rows = s.repositories.map((r) => [r.repository, String(r.snapshots), human(r.logicalBytes), human(r.storedBytes), String(r.dedupRatio ?? '-')]);
      print(table([['REPOSITORY', 'SNAPSHOTS', 'LOGICAL', 'STORED', 'DEDUP'], ...rows]));
      return;
    }
    const s = await a.repoStats(repo);
    if (o.json) return printJson(s);
    print(`${s.repository}: ${s.snapshots} snapshots, logical ${human(s.logicalBytes)}, stored ${human(s.storedBytes)}, dedup ratio ${s.dedupRatio ?? '-'}`);
    const rows = s.perSnapshot.map((p) => [p.tags.join(',') || '-', short(p.digest), human(p.size), human(p.storedBytes), human(p.uniqueBytes)]);
    print(table([['TAGS', 'DIGEST', 'SIZE', 'STORED', 'UNIQUE'], ...rows]));
    for (const v of s.variants) {
      print(`variant ${v.variant}: ${v.versions.map((x) => x.tag).join(' -> ')}`);
      for (const d of v.deltas) print(`  ${d.from} -> ${d.to}: ${human(d.bytes)} new stored bytes`);
    }
  });
}
