/** Server status (the numbers /metrics exports) and, for admins, gc with a dry-run preview before it runs. */
import { useState } from 'preact/hooks';
import { ADMIN, CATALOG, type Api } from '../api';
import { Show, useData } from '../components/data';
import { bytes, time } from '../format';
import type { Grants } from '../grants';

interface Status {
  version: string;
  backend: { store: string; metadata: string };
  disk: { path: string; totalBytes: number; freeBytes: number } | null;
  blobs: { count: number; logicalBytes: number };
  chunks: { count: number; storedBytes: number; rawBytes: number };
  sessionsOpen: number;
  lastGc: { time: string; dryRun: boolean; chunks: number; storedBytes: number; seconds: number } | null;
  lastVerify: { time: string; ok: boolean; problems: number } | null;
}

interface GcReport { chunks: number; storedBytes: number; blobsUnlinked: number; blobsDeleted: number; packsRewritten: number; packBytesFreed: number; seconds: number }

function GcPanel({ api, onDone }: { api: Api; onDone: () => void }) {
  const [preview, setPreview] = useState<GcReport | null>(null);
  const [msg, setMsg] = useState<string | null>(null);
  const run = (dryRun: boolean) => api.call<GcReport>('POST', '/snapyard/v1/_admin/gc', { scope: ADMIN, body: { dryRun } });
  const say = (r: GcReport, what: string) => `${what} ${r.chunks} chunks (${bytes(r.storedBytes)}), ${r.blobsUnlinked} blob links, ${r.blobsDeleted} blobs`;
  return (
    <section class="panel" aria-labelledby="gc-h">
      <h2 id="gc-h">Garbage collection</h2>
      <button type="button" data-action="gc-preview" onClick={() => { setMsg(null); run(true).then(setPreview, (e: Error) => setMsg(e.message)); }}>Preview gc</button>
      {preview ? (
        <div class="confirm" role="group" aria-label="gc preview">
          <p>{say(preview, 'Would free')}.</p>
          <button type="button" class="danger" data-action="gc-confirm" onClick={() => run(false).then((r) => { setPreview(null); setMsg(say(r, 'Freed')); onDone(); }, (e: Error) => setMsg(e.message))}>Run gc now</button>
          <button type="button" onClick={() => setPreview(null)}>Cancel</button>
        </div>
      ) : null}
      {msg ? <p class="note" role="status">{msg}</p> : null}
    </section>
  );
}

export function StatusPage({ api, grants }: { api: Api; grants: Grants }) {
  const [tick, setTick] = useState(0);
  const d = useData(() => api.get<Status>('/snapyard/v1/_admin/status', CATALOG), [api.user, tick]);
  return (
    <section>
      <h1>Server status</h1>
      <Show d={d}>
        {(s) => (
          <dl class="facts" id="status">
            <div><dt>Version</dt><dd>{s.version}</dd></div>
            <div><dt>Chunk store</dt><dd>{s.backend.store}</dd></div>
            <div><dt>Metadata</dt><dd>{s.backend.metadata}</dd></div>
            <div><dt>Disk</dt><dd>{s.disk ? `${bytes(s.disk.totalBytes - s.disk.freeBytes)} used of ${bytes(s.disk.totalBytes)} (${bytes(s.disk.freeBytes)} free)` : '–'}</dd></div>
            <div><dt>Blobs</dt><dd>{s.blobs.count} ({bytes(s.blobs.logicalBytes)})</dd></div>
            <div><dt>Chunks</dt><dd>{s.chunks.count} ({bytes(s.chunks.storedBytes)} stored, {bytes(s.chunks.rawBytes)} raw)</dd></div>
            <div><dt>Open sessions</dt><dd>{s.sessionsOpen}</dd></div>
            <div><dt>Last gc</dt><dd>{s.lastGc ? `${time(s.lastGc.time)}${s.lastGc.dryRun ? ' (dry run)' : ''}: ${s.lastGc.chunks} chunks, ${bytes(s.lastGc.storedBytes)}, ${s.lastGc.seconds.toFixed(1)} s` : 'not since start'}</dd></div>
            <div><dt>Last verify</dt><dd>{s.lastVerify ? `${time(s.lastVerify.time)}: ${s.lastVerify.ok ? 'ok' : `${s.lastVerify.problems} problems`}` : 'not since start'}</dd></div>
          </dl>
        )}
      </Show>
      {grants.admin ? <GcPanel api={api} onDone={() => setTick((t) => t + 1)} /> : null}
    </section>
  );
}
