/** A tag's history as a timeline: push, tag, rollback, rm, prune; old -> new digest; roll back to any earlier digest. */
import { useState } from 'preact/hooks';
import { repoScope, v1, type Api } from '../api';
import { Pager, Show, useData } from '../components/data';
import { TagActions } from '../components/tag-actions';
import { shortDigest, time } from '../format';
import { canAct, type Grants } from '../grants';
import { href } from '../router';

interface History {
  current: string | null;
  total: number;
  events: Array<{ time: string; old: string | null; new: string | null; source: string }>;
}

const N = 50;

export function HistoryPage({ api, repo, tag, grants }: { api: Api; repo: string; tag: string; grants: Grants }) {
  const [offset, setOffset] = useState(0);
  const [tick, setTick] = useState(0);
  const d = useData(() => api.get<History>(v1(repo, `_tags/${encodeURIComponent(tag)}/_history?n=${N}&offset=${offset}`), repoScope(repo)), [repo, tag, offset, api.user, tick]);
  const changed = () => setTick((t) => t + 1);
  return (
    <section>
      <h1>{repo}:{tag}</h1>
      <p class="links"><a href={href.repo(repo)}>Back to {repo}</a></p>
      <Show d={d}>
        {(h) => (
          <>
            <p>Points at <a id="current" data-digest={h.current ?? ''} href={h.current ? href.snapshot(repo, h.current) : undefined}>{h.current ? shortDigest(h.current) : 'nothing (removed)'}</a></p>
            {canAct(grants) ? <TagActions api={api} repo={repo} tag={tag} grants={grants} onDone={changed} /> : null}
            <ol class="timeline" id="timeline">
              {h.events.map((e, i) => (
                <li key={`${e.time}${i}`} data-source={e.source}>
                  <time dateTime={e.time}>{time(e.time)}</time>
                  <span class={`badge ${e.source}`}>{e.source}</span>
                  <span class="move">{e.old ? <a href={href.snapshot(repo, e.old)}>{shortDigest(e.old)}</a> : 'created'} → {e.new ? <a href={href.snapshot(repo, e.new)}>{shortDigest(e.new)}</a> : 'removed'}</span>
                  {grants.actions.includes('push') && e.new && e.new !== h.current ? <TagActions api={api} repo={repo} tag={tag} grants={{ ...grants, actions: ['push'] }} rollbackTo={e.new} onDone={changed} /> : null}
                </li>
              ))}
            </ol>
            <Pager total={h.total} offset={offset} n={N} onPage={setOffset} label="History" />
          </>
        )}
      </Show>
    </section>
  );
}
