/** Move, roll back, remove a tag: each asks for confirmation inline, then calls the admin API. */
import { useState } from 'preact/hooks';
import { repoScope, v1, type Api } from '../api';
import type { Grants } from '../grants';

type Mode = null | 'move' | 'rollback' | 'remove';

export function TagActions(props: { api: Api; repo: string; tag: string; grants: Grants; onDone: () => void; rollbackTo?: string }) {
  const { api, repo, tag, grants } = props;
  const [mode, setMode] = useState<Mode>(null);
  const [target, setTarget] = useState('');
  const [msg, setMsg] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const path = v1(repo, `_tags/${encodeURIComponent(tag)}`);
  const run = async (fn: () => Promise<unknown>, done: string) => {
    setBusy(true);
    try {
      await fn();
      setMsg(done);
      setMode(null);
      props.onDone();
    } catch (e) {
      setMsg((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const push = grants.actions.includes('push');
  const del = grants.actions.includes('delete') && !props.rollbackTo;
  return (
    <div class="actions">
      {push && !props.rollbackTo ? <button type="button" data-action="move" onClick={() => setMode('move')} aria-expanded={mode === 'move'}>Move…</button> : null}
      {push ? <button type="button" data-action="rollback" onClick={() => setMode('rollback')} aria-expanded={mode === 'rollback'}>{props.rollbackTo ? 'Roll back here…' : 'Roll back…'}</button> : null}
      {del ? <button type="button" class="danger" data-action="remove" onClick={() => setMode('remove')} aria-expanded={mode === 'remove'}>Remove…</button> : null}
      {mode === 'move' ? (
        <form class="confirm" onSubmit={(e) => { e.preventDefault(); void run(() => api.call('PUT', path, { scope: repoScope(repo, 'pull,push'), body: { target } }), `${tag} moved to ${target}`); }}>
          <label>Point {tag} at (tag or digest) <input required value={target} onInput={(e) => setTarget((e.target as HTMLInputElement).value)} /></label>
          <button type="submit" disabled={busy}>Move {tag}</button>
          <button type="button" onClick={() => setMode(null)}>Cancel</button>
        </form>
      ) : null}
      {mode === 'rollback' ? (
        <div class="confirm" role="group" aria-label={`Roll back ${tag}`}>
          <span>{props.rollbackTo ? `Point ${tag} back at ${props.rollbackTo.slice(7, 19)}?` : `Point ${tag} at its previous version?`}</span>
          <button type="button" data-action="confirm-rollback" disabled={busy} onClick={() => void run(() => api.call('POST', `${path}/_rollback`, { scope: repoScope(repo, 'pull,push'), body: props.rollbackTo ? { to: props.rollbackTo } : { steps: 1 } }), `${tag} rolled back`)}>Roll back {tag}</button>
          <button type="button" onClick={() => setMode(null)}>Cancel</button>
        </div>
      ) : null}
      {mode === 'remove' ? (
        <div class="confirm" role="group" aria-label={`Remove ${tag}`}>
          <span>Remove the tag {tag}? The snapshot stays until pruned.</span>
          <button type="button" class="danger" data-action="confirm-remove" disabled={busy} onClick={() => void run(() => api.call('DELETE', path, { scope: repoScope(repo, 'delete') }), `${tag} removed`)}>Remove {tag}</button>
          <button type="button" onClick={() => setMode(null)}>Cancel</button>
        </div>
      ) : null}
      {msg ? <p class="note" role="status">{msg}</p> : null}
    </div>
  );
}
