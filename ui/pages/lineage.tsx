/**
 * The lineage graph: snapshots as nodes, edges from a base to what was built
 * on it (OCI subject, recorded base) and from a version to the next one of its
 * family, each labelled with its delta. A layered layout: a node's column is
 * its longest path from a root; rows in order of appearance.
 */
import { repoScope, v1, type Api } from '../api';
import { Show, useData } from '../components/data';
import { bytes, shortDigest } from '../format';
import { href } from '../router';

interface Node { digest: string; tags: string[]; size: number | null }
interface Edge { from: string; to: string; kind: 'base' | 'version'; deltaBytes: number | null }
interface Lineage { total: number; nodes: Node[]; edges: Edge[] }

const W = 170;
const H = 44;
const GX = 90;
const GY = 26;

/**
 * Columns: a node's longest path from a root (edges go from older to newer snapshots, so there is no cycle).
 * Rows: one lane per family chain (a version continues its previous version's lane); a new lane built on a base
 * goes right below its base's lane, so base edges stay short and do not cross other families.
 */
function layout(g: Lineage): Map<string, { x: number; y: number }> {
  const depth = new Map<string, number>(g.nodes.map((n) => [n.digest, 0]));
  for (let pass = 0; pass < g.nodes.length; pass++) {
    let moved = false;
    for (const e of g.edges) {
      const d = (depth.get(e.from) ?? 0) + 1;
      if (d > (depth.get(e.to) ?? 0)) {
        depth.set(e.to, d);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const versionOf = new Map(g.edges.filter((e) => e.kind === 'version').map((e) => [e.to, e.from]));
  const baseOf = new Map(g.edges.filter((e) => e.kind === 'base').map((e) => [e.to, e.from]));
  const lane = new Map<string, number>();
  const order: number[] = [];
  const ordered = g.nodes.map((n, i) => ({ n, i })).sort((a, b) => (depth.get(a.n.digest)! - depth.get(b.n.digest)!) || b.i - a.i);
  for (const { n } of ordered) {
    const prev = versionOf.get(n.digest);
    if (prev !== undefined && lane.has(prev)) {
      lane.set(n.digest, lane.get(prev)!);
      continue;
    }
    const id = order.length;
    const base = baseOf.get(n.digest);
    const at = base !== undefined && lane.has(base) ? order.indexOf(lane.get(base)!) + 1 : order.length;
    order.splice(at, 0, id);
    lane.set(n.digest, id);
  }
  const pos = new Map<string, { x: number; y: number }>();
  for (const n of g.nodes) pos.set(n.digest, { x: 10 + depth.get(n.digest)! * (W + GX), y: 10 + GY + order.indexOf(lane.get(n.digest)!) * (H + GY) });
  return pos;
}

export function LineagePage({ api, repo }: { api: Api; repo: string }) {
  const d = useData(() => api.get<Lineage>(v1(repo, '_lineage?n=200'), repoScope(repo)), [repo, api.user]);
  return (
    <section>
      <h1>Lineage of {repo}</h1>
      <p class="links"><a href={href.repo(repo)}>Back to {repo}</a></p>
      <Show d={d}>
        {(g) => {
          const pos = layout(g);
          const width = Math.max(...[...pos.values()].map((p) => p.x + W), 200) + 10;
          const height = Math.max(...[...pos.values()].map((p) => p.y + H), 60) + 10;
          return (
            <>
              {g.nodes.length < g.total ? <p class="muted">The newest {g.nodes.length} of {g.total} snapshots.</p> : null}
              <div class="scroll graph">
                <svg id="lineage" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`Lineage graph of ${repo}: ${g.nodes.length} snapshots, ${g.edges.length} edges`}>
                  <defs>
                    <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666" /></marker>
                  </defs>
                  {g.edges.map((e) => {
                    const a = pos.get(e.from)!;
                    const b = pos.get(e.to)!;
                    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
                    // An edge over more than one column arcs above the rows it passes, instead of through their nodes.
                    const long = x2 - x1 > GX + 1;
                    const cy1 = long ? Math.min(a.y, b.y) - GY / 2 : y1;
                    const cy2 = long ? cy1 : y2;
                    const c = [x1 + (long ? GX : GX / 2), cy1, x2 - (long ? GX : GX / 2), cy2] as const;
                    const mx = (x1 + 3 * c[0] + 3 * c[2] + x2) / 8;
                    const my = (y1 + 3 * c[1] + 3 * c[3] + y2) / 8;
                    return (
                      <g key={`${e.from}${e.to}`} class={`edge ${e.kind}`} data-from={e.from} data-to={e.to} data-kind={e.kind} data-bytes={e.deltaBytes ?? ''}>
                        <path d={`M ${x1} ${y1} C ${c[0]} ${c[1]}, ${c[2]} ${c[3]}, ${x2} ${y2}`} fill="none" marker-end="url(#arrow)" />
                        <text x={mx} y={my - 4} text-anchor="middle">{bytes(e.deltaBytes)}</text>
                      </g>
                    );
                  })}
                  {g.nodes.map((n) => {
                    const p = pos.get(n.digest)!;
                    const label = n.tags.join(', ') || shortDigest(n.digest);
                    return (
                      <a key={n.digest} href={href.snapshot(repo, n.digest)} class="node" data-digest={n.digest} data-tags={n.tags.join(',')} aria-label={`snapshot ${label}`}>
                        <rect x={p.x} y={p.y} width={W} height={H} rx="6" />
                        <text x={p.x + 8} y={p.y + 18}>{label.length > 22 ? `${label.slice(0, 21)}…` : label}</text>
                        <text x={p.x + 8} y={p.y + 35} class="small">{bytes(n.size)}</text>
                      </a>
                    );
                  })}
                </svg>
              </div>
              <p class="muted">Solid: built on (subject or recorded base); dashed: next version of a family. Labels: bytes a node holding the source still needs.</p>
            </>
          );
        }}
      </Show>
    </section>
  );
}
