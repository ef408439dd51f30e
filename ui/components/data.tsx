/** Loading a page's data from the admin API, with its loading and error states. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import { ApiError } from '../api';

export interface Loaded<T> {
  data: T | null;
  error: ApiError | Error | null;
  reload: () => void;
}

export function useData<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data: T | null; error: Error | null }>({ data: null, error: null });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data, error: null }),
      (error: Error) => live && setState({ data: null, error }),
    );
    return () => {
      live = false;
    };
  }, [...deps, n]);
  const reload = useCallback(() => setN((x) => x + 1), []);
  return { ...state, reload };
}

export function Show<T>(props: { d: Loaded<T>; children: (data: T) => ComponentChildren }) {
  if (props.d.error) {
    const e = props.d.error;
    return (
      <p class="error" role="alert">
        {e.message}
        {e instanceof ApiError && e.status === 401 ? <> — <a href="#/login">log in</a></> : null}
      </p>
    );
  }
  if (props.d.data === null) return <p class="muted" aria-busy="true">Loading…</p>;
  return <>{props.children(props.d.data)}</>;
}

export function Pager(props: { total: number; offset: number; n: number; onPage: (offset: number) => void; label: string }) {
  const { total, offset, n } = props;
  if (total <= n) return null;
  return (
    <nav class="pager" aria-label={`${props.label} pages`}>
      <button type="button" disabled={offset === 0} onClick={() => props.onPage(Math.max(0, offset - n))}>Previous</button>
      <span>{offset + 1}–{Math.min(total, offset + n)} of {total}</span>
      <button type="button" disabled={offset + n >= total} onClick={() => props.onPage(offset + n)}>Next</button>
    </nav>
  );
}
