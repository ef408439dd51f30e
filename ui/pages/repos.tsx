/** The repositories: snapshots, tags, logical and stored bytes, dedup ratio; a plot of the dedup ratio per repository. */
import { useState } from 'preact/hooks';
import { CATALOG, type Api } from '../api';
import { Chart } from '../components/chart';
import { Pager, Show, useData } from '../components/data';
import { bytes, ratio } from '../format';
import { href } from '../router';

interface Repo {
  name: string;
  snapshots: number;
  tags: number;
  logicalBytes: number;
  storedBytes: number;
  dedupRatio: number | null;
}

const N = 50;

export function ReposPage({ api }: { api: Api }) {
  const [offset, setOffset] = useState(0);
  const d = useData(() => api.get<{ total: number; repositories: Repo[] }>(`/snapyard/v1/_admin/repositories?stats=true&n=${N}&offset=${offset}`, CATALOG), [offset, api.user]);
  return (
    <section>
      <h1>Repositories</h1>
      <Show d={d}>
        {(r) => (
          <>
            <div class="scroll">
              <table id="repos">
                <thead>
                  <tr><th scope="col">Repository</th><th scope="col" class="num">Snapshots</th><th scope="col" class="num">Tags</th><th scope="col" class="num">Logical</th><th scope="col" class="num">Stored</th><th scope="col" class="num">Dedup</th></tr>
                </thead>
                <tbody>
                  {r.repositories.map((x) => (
                    <tr key={x.name} data-repo={x.name}>
                      <th scope="row"><a href={href.repo(x.name)}>{x.name}</a></th>
                      <td class="num" data-k="snapshots">{x.snapshots}</td>
                      <td class="num">{x.tags}</td>
                      <td class="num" data-k="logical" data-bytes={x.logicalBytes}>{bytes(x.logicalBytes)}</td>
                      <td class="num" data-k="stored" data-bytes={x.storedBytes}>{bytes(x.storedBytes)}</td>
                      <td class="num">{ratio(x.dedupRatio)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            {r.repositories.length === 0 ? <p class="muted">No repository you may read yet.</p> : null}
            <Pager total={r.total} offset={offset} n={N} onPage={setOffset} label="Repositories" />
            {r.repositories.length > 0 ? (
              <Chart title="Dedup ratio per repository" kind="bars" xLabel="repository" x={r.repositories.map((_, i) => i)} xLabels={r.repositories.map((x) => x.name)} series={[{ label: 'dedup ratio', color: '#3b6ea8', values: r.repositories.map((x) => x.dedupRatio) }]} />
            ) : null}
          </>
        )}
      </Show>
    </section>
  );
}
