/**
 * A repository: overview (sizes, dedup), its tags grouped by family with each
 * version's sizes and the delta to the previous version, plots (stored vs
 * logical bytes over time, delta per version), and the actions the caller may
 * take (move, roll back, remove a tag; prune with a preview first).
 */
import { useState } from 'preact/hooks';
import { repoScope, v1, type Api } from '../api';
import { Chart } from '../components/chart';
import { Pager, Show, useData } from '../components/data';
import { TagActions } from '../components/tag-actions';
import { PrunePanel } from '../components/prune';
import { bytes, ratio, shortDigest, time } from '../format';
import { href } from '../router';
import { canAct, type Grants } from '../grants';

export interface Version {
  tag: string;
  family: string;
  version: number | null;
  digest: string;
  created: string;
  virtualSize: number | null;
  size: number | null;
  storedBytes: number | null;
  uniqueBytes: number | null;
  base: { digest: string; tags: string[] } | null;
  previous: { tag: string; digest: string } | null;
  deltaBytes: number | null;
}

interface Overview {
  snapshots: number;
  tags: number;
  logicalBytes: number;
  storedBytes: number;
  dedupRatio: number | null;
  growth: Array<{ time: string; logicalBytes: number; storedBytes: number }>;
}

const N = 50;

function groups(items: Version[]): Array<[string, Version[]]> {
  const out = new Map<string, Version[]>();
  for (const v of items) out.set(v.family, [...(out.get(v.family) ?? []), v]);
  return [...out];
}

export function RepoPage({ api, repo, grants }: { api: Api; repo: string; grants: Grants }) {
  const [offset, setOffset] = useState(0);
  const [sort, setSort] = useState('family');
  const [tick, setTick] = useState(0);
  const scope = repoScope(repo);
  const ov = useData(() => api.get<Overview>(v1(repo, '_overview'), scope), [repo, api.user, tick]);
  const vs = useData(() => api.get<{ total: number; items: Version[] }>(v1(repo, `_versions?sort=${sort}&n=${N}&offset=${offset}`), scope), [repo, sort, offset, api.user, tick]);
  const changed = () => setTick((t) => t + 1);
  return (
    <section>
      <h1>{repo}</h1>
      <p class="links"><a href={href.lineage(repo)}>Lineage graph</a></p>
      <Show d={ov}>
        {(o) => (
          <>
            <dl class="cards">
              <div><dt>Snapshots</dt><dd id="ov-snapshots">{o.snapshots}</dd></div>
              <div><dt>Tags</dt><dd>{o.tags}</dd></div>
              <div><dt>Logical</dt><dd id="ov-logical">{bytes(o.logicalBytes)}</dd></div>
              <div><dt>Stored</dt><dd id="ov-stored">{bytes(o.storedBytes)}</dd></div>
              <div><dt>Dedup ratio</dt><dd>{ratio(o.dedupRatio)}</dd></div>
            </dl>
            {o.growth.length > 1 ? (
              <Chart title="Stored vs logical bytes over time" kind="line" time yBytes x={o.growth.map((g) => Date.parse(g.time) / 1000)} series={[{ label: 'logical', color: '#8a5a00', values: o.growth.map((g) => g.logicalBytes) }, { label: 'stored', color: '#2a7a3a', values: o.growth.map((g) => g.storedBytes) }]} />
            ) : null}
          </>
        )}
      </Show>
      <h2>Variants and versions</h2>
      <label class="inline">Sort by{' '}
        <select value={sort} onChange={(e) => { setSort((e.target as HTMLSelectElement).value); setOffset(0); }}>
          <option value="family">family and version</option>
          <option value="created">newest snapshot</option>
          <option value="updated">latest tag move</option>
          <option value="size">image size</option>
        </select>
      </label>
      <Show d={vs}>
        {(r) => {
          const deltas = r.items.filter((v) => v.deltaBytes !== null);
          return (
            <>
              <div class="scroll">
                <table id="versions">
                  <thead>
                    <tr><th scope="col">Tag</th><th scope="col" class="num">Virtual</th><th scope="col" class="num">Image</th><th scope="col" class="num">Stored</th><th scope="col" class="num">Unique</th><th scope="col" class="num">Δ previous</th><th scope="col">Base</th><th scope="col">Created</th>{canAct(grants) ? <th scope="col">Actions</th> : null}</tr>
                  </thead>
                  {groups(r.items).map(([family, items]) => (
                    <tbody key={family} data-family={family}>
                      <tr class="family"><th colSpan={9} scope="rowgroup">{family}</th></tr>
                      {items.map((v) => (
                        <tr key={v.tag} data-tag={v.tag} data-digest={v.digest}>
                          <th scope="row"><a href={href.history(repo, v.tag)}>{v.tag}</a> <a class="muted" href={href.snapshot(repo, v.digest)} aria-label={`snapshot ${v.tag}`}>{shortDigest(v.digest)}</a></th>
                          <td class="num" data-k="virtual" data-bytes={v.virtualSize ?? ''}>{bytes(v.virtualSize)}</td>
                          <td class="num" data-k="size" data-bytes={v.size ?? ''}>{bytes(v.size)}</td>
                          <td class="num" data-k="stored" data-bytes={v.storedBytes ?? ''}>{bytes(v.storedBytes)}</td>
                          <td class="num" data-k="unique" data-bytes={v.uniqueBytes ?? ''}>{bytes(v.uniqueBytes)}</td>
                          <td class="num" data-k="delta" data-bytes={v.deltaBytes ?? ''} title={v.previous ? `from ${v.previous.tag}` : undefined}>{v.previous ? `${bytes(v.deltaBytes)} from ${v.previous.tag}` : '–'}</td>
                          <td>{v.base ? v.base.tags[0] ?? shortDigest(v.base.digest) : '–'}</td>
                          <td>{time(v.created)}</td>
                          {canAct(grants) ? <td><TagActions api={api} repo={repo} tag={v.tag} grants={grants} onDone={changed} /></td> : null}
                        </tr>
                      ))}
                    </tbody>
                  ))}
                </table>
              </div>
              <Pager total={r.total} offset={offset} n={N} onPage={setOffset} label="Versions" />
              {deltas.length > 0 ? (
                <Chart title="Delta to the previous version" kind="bars" xLabel="version" yBytes x={deltas.map((_, i) => i)} xLabels={deltas.map((v) => v.tag)} series={[{ label: 'delta', color: '#a8453b', values: deltas.map((v) => v.deltaBytes) }]} />
              ) : null}
            </>
          );
        }}
      </Show>
      {grants.actions.includes('delete') ? <PrunePanel api={api} repo={repo} onDone={changed} /> : null}
    </section>
  );
}
