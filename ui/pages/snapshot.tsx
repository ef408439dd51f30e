/** A snapshot: qcow2 facts (as `snapyard inspect REF`), chunk statistics, lineage, and the commands that fetch it. */
import { repoScope, v1, type Api } from '../api';
import { Show, useData } from '../components/data';
import { bytes, shortDigest, time } from '../format';
import { href } from '../router';

interface Snapshot {
  digest: string;
  tags: string[];
  created: string;
  blob: string | null;
  size: number | null;
  virtualSize: number | null;
  storedBytes: number | null;
  uniqueBytes: number | null;
  base: { subject: string | null; blob: string | null; backingFile: string | null } | null;
  image: Record<string, unknown> | null;
  chunks: Record<string, unknown> | null;
  commands: { pull: string; podInit: string | null };
}

const BYTE_KEYS = /Size$|Bytes$|^bytes$|^size$/;

function Facts({ obj, id }: { obj: Record<string, unknown>; id: string }) {
  return (
    <dl class="facts" id={id}>
      {Object.entries(obj).map(([k, v]) => (
        <div key={k} data-k={k}><dt>{k}</dt><dd>{typeof v === 'number' && BYTE_KEYS.test(k) ? `${bytes(v)} (${v})` : typeof v === 'object' && v !== null ? Object.entries(v).map(([a, b]) => `${a} ${typeof b === 'number' && BYTE_KEYS.test(a) ? bytes(b) : String(b)}`).join(', ') : String(v ?? '–')}</dd></div>
      ))}
    </dl>
  );
}

function Command({ label, text }: { label: string; text: string }) {
  return (
    <div class="command">
      <h3>{label}</h3>
      <pre><code>{text}</code></pre>
      <button type="button" onClick={() => void navigator.clipboard?.writeText(text)}>Copy {label} command</button>
    </div>
  );
}

export function SnapshotPage({ api, repo, reference }: { api: Api; repo: string; reference: string }) {
  const d = useData(() => api.get<Snapshot>(v1(repo, `_snapshots/${encodeURIComponent(reference)}`), repoScope(repo)), [repo, reference, api.user]);
  return (
    <section>
      <Show d={d}>
        {(s) => (
          <>
            <h1>{repo}{s.tags.length ? `:${s.tags.join(', ')}` : `@${shortDigest(s.digest)}`}</h1>
            <p class="links"><a href={href.repo(repo)}>Back to {repo}</a>{s.tags.map((t) => <> · <a href={href.history(repo, t)}>history of {t}</a></>)}</p>
            <Facts id="summary" obj={{ digest: s.digest, created: time(s.created), blob: s.blob, size: s.size, virtualSize: s.virtualSize, storedBytes: s.storedBytes, uniqueBytes: s.uniqueBytes, base: s.base ? s.base.backingFile ?? s.base.subject ?? s.base.blob : null }} />
            <h2>Image</h2>
            {s.image ? <Facts id="image" obj={s.image} /> : <p class="muted">No image (an index).</p>}
            <h2>Chunks</h2>
            {s.chunks ? <Facts id="chunks" obj={s.chunks} /> : null}
            <h2>Use it</h2>
            <Command label="pull" text={s.commands.pull} />
            {s.commands.podInit ? <Command label="pod-init" text={s.commands.podInit} /> : null}
          </>
        )}
      </Show>
    </section>
  );
}
