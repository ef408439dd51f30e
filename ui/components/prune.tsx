/** Prune: keep the newest N tags matching a glob; always previewed (dryRun) first, then confirmed. */
import { useState } from 'preact/hooks';
import { repoScope, v1, type Api } from '../api';

interface PruneResult {
  kept: Array<{ tag: string; reason: string }>;
  removedTags: Array<{ tag: string } | string>;
  removedManifests: string[];
}

const tagName = (t: { tag: string } | string) => (typeof t === 'string' ? t : t.tag);

export function PrunePanel({ api, repo, onDone }: { api: Api; repo: string; onDone: () => void }) {
  const [keep, setKeep] = useState('3');
  const [match, setMatch] = useState('*');
  const [preview, setPreview] = useState<PruneResult | null>(null);
  const [msg, setMsg] = useState<string | null>(null);
  const call = (dryRun: boolean) => api.call<PruneResult>('POST', v1(repo, '_prune'), { scope: repoScope(repo, 'delete'), body: { keep: Number(keep), match, dryRun } });
  return (
    <section class="panel" aria-labelledby="prune-h">
      <h2 id="prune-h">Prune</h2>
      <form onSubmit={(e) => { e.preventDefault(); setMsg(null); call(true).then(setPreview, (x: Error) => setMsg(x.message)); }}>
        <label>Keep the newest <input type="number" min="0" required value={keep} onInput={(e) => { setKeep((e.target as HTMLInputElement).value); setPreview(null); }} /></label>
        <label>tags matching <input required value={match} onInput={(e) => { setMatch((e.target as HTMLInputElement).value); setPreview(null); }} /></label>
        <button type="submit" data-action="prune-preview">Preview</button>
      </form>
      {preview ? (
        <div class="confirm" role="group" aria-label="Prune preview">
          <p>Would remove {preview.removedTags.length} tag(s) ({preview.removedTags.map(tagName).join(', ') || 'none'}) and {preview.removedManifests.length} snapshot(s); keeps {preview.kept.length}.</p>
          <button type="button" class="danger" data-action="prune-confirm" disabled={preview.removedTags.length === 0} onClick={() => call(false).then((r) => { setPreview(null); setMsg(`Removed ${r.removedTags.length} tag(s), ${r.removedManifests.length} snapshot(s)`); onDone(); }, (x: Error) => setMsg(x.message))}>Prune now</button>
          <button type="button" onClick={() => setPreview(null)}>Cancel</button>
        </div>
      ) : null}
      {msg ? <p class="note" role="status">{msg}</p> : null}
    </section>
  );
}
