/** Log in with the registry's own users (the token flow: GET /token with Basic credentials). */
import { useState } from 'preact/hooks';
import type { Api } from '../api';

export function LoginPage({ api }: { api: Api }) {
  const [user, setUser] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  if (api.user) {
    return (
      <section>
        <h1>Logged in as {api.user}</h1>
        <button type="button" onClick={() => api.logout()}>Log out</button>
      </section>
    );
  }
  return (
    <section>
      <h1>Log in</h1>
      <form class="login" onSubmit={(e) => { e.preventDefault(); setError(null); api.login(user, password).then(() => { location.hash = '#/'; }, (x: Error) => setError(x.message)); }}>
        <label>User <input name="user" autoComplete="username" required value={user} onInput={(e) => setUser((e.target as HTMLInputElement).value)} /></label>
        <label>Password <input name="password" type="password" autoComplete="current-password" required value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} /></label>
        <button type="submit">Log in</button>
        {error ? <p class="error" role="alert">{error}</p> : null}
      </form>
    </section>
  );
}
