/** The web page (docs/ui.md): a hash-routed preact app over the admin API. */
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { Api, CATALOG } from './api';
import { NO_GRANTS, type Grants } from './grants';
import { href, useRoute } from './router';
import { ReposPage } from './pages/repos';
import { RepoPage } from './pages/repo';
import { LineagePage } from './pages/lineage';
import { HistoryPage } from './pages/history';
import { SnapshotPage } from './pages/snapshot';
import { StatusPage } from './pages/status';
import { LoginPage } from './pages/login';

function useGrants(api: Api, repo: string | null): Grants {
  const [g, setG] = useState<Grants>(NO_GRANTS);
  useEffect(() => {
    let live = true;
    setG(NO_GRANTS);
    api.get<Grants>(`/snapyard/v1/_admin/grants${repo ? `?repository=${encodeURIComponent(repo)}` : ''}`, CATALOG).then((x) => live && setG(x), () => {});
    return () => {
      live = false;
    };
  }, [repo, api.user]);
  return g;
}

function App() {
  const api = useMemo(() => new Api(), []);
  const [, setUser] = useState<string | null>(null);
  api.onChange = () => setUser(api.user);
  const route = useRoute();
  const repo = 'repo' in route ? route.repo : null;
  const grants = useGrants(api, repo);
  useEffect(() => {
    document.title = `snapyard${repo ? ` · ${repo}` : ''}`;
    document.getElementById('main')?.focus();
  }, [route]);
  let page;
  switch (route.page) {
    case 'repo': page = <RepoPage api={api} repo={route.repo} grants={grants} />; break;
    case 'lineage': page = <LineagePage api={api} repo={route.repo} />; break;
    case 'history': page = <HistoryPage api={api} repo={route.repo} tag={route.tag} grants={grants} />; break;
    case 'snapshot': page = <SnapshotPage api={api} repo={route.repo} reference={route.ref} />; break;
    case 'status': page = <StatusPage api={api} grants={grants} />; break;
    case 'login': page = <LoginPage api={api} />; break;
    default: page = <ReposPage api={api} />;
  }
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
      <header>
        <a class="brand" href={href.repos()}>snapyard</a>
        <nav aria-label="Main">
          <a href={href.repos()} aria-current={route.page === 'repos' ? 'page' : undefined}>Repositories</a>
          <a href={href.status()} aria-current={route.page === 'status' ? 'page' : undefined}>Status</a>
          {api.user ? <button type="button" class="link" onClick={() => api.logout()}>Log out {api.user}</button> : <a href={href.login()} aria-current={route.page === 'login' ? 'page' : undefined}>Log in</a>}
        </nav>
      </header>
      <main id="main" tabIndex={-1}>{page}</main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
