/**
 * Running the snapyard image with podman the way Kubernetes runs a container
 * of the manifests: the container's args after the image's entrypoint, its
 * env and envFrom (resolved from the manifests' ConfigMaps and Secrets, with
 * the test's overrides), $(VAR) expansion in args, its mounts (volumes mapped
 * to host directories), and its security context (user, read-only root, no
 * capabilities, no privilege escalation).
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import type { K8sObject } from './kustomize.js';

const ROOT = resolve(import.meta.dirname, '..', '..');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (never rejects on exit codes; killed after timeoutMs, then code is null). */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const o = { cwd: ROOT, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 120_000, killSignal: 'SIGKILL' as const, maxBuffer: 64 * 1024 * 1024 };
    execFile(cmd, args, o, (err, stdout, stderr) => {
      if (err && typeof err.code === 'string') fail(err);
      else done({ code: err ? (err.killed ? null : typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

/** scripts/container.sh: builds the image (installing podman and buildah when missing) and says how to reach it. */
export async function buildImage(): Promise<{ image: string; env: NodeJS.ProcessEnv; log: string }> {
  const b = await run('bash', ['scripts/container.sh', 'build'], { timeoutMs: 25 * 60_000 });
  if (b.code !== 0) throw new Error(`scripts/container.sh build exited ${b.code}:\n${b.stderr.slice(-4000)}`);
  const e = await run('bash', ['scripts/container.sh', 'env']);
  const vars = Object.fromEntries(e.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { image: vars.SNAPYARD_IMAGE!, env: { ...process.env, ...vars }, log: b.stderr };
}

export class Podman {
  private readonly names = new Set<string>();
  private seq = 0;

  constructor(readonly image: string, private readonly env: NodeJS.ProcessEnv) {}

  /** podman ARGS; throws with stderr unless it exits 0. */
  async ok(args: string[], timeoutMs = 120_000): Promise<string> {
    const r = await this.run(args, timeoutMs);
    if (r.code !== 0) throw new Error(`podman ${args.join(' ')} exited ${r.code}:\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`);
    return r.stdout;
  }

  run(args: string[], timeoutMs = 120_000): Promise<Run> {
    return run('podman', args, { env: this.env, timeoutMs });
  }

  /** A container name unique to this process, removed by removeAll(). */
  name(label: string): string {
    const n = `snapyard-test-${label}-${process.pid}-${++this.seq}`;
    this.names.add(n);
    return n;
  }

  /** Removes every container this instance named (running or not). */
  async removeAll(): Promise<void> {
    for (const n of this.names) await this.run(['rm', '-f', '-t', '0', n]);
    this.names.clear();
  }
}

export interface AsDeclared {
  /** Host directory for each of the pod's volumes the container mounts. */
  volumes: Record<string, string>;
  /** Environment values replacing what the manifests give (cluster addresses, real passwords). */
  envOverrides?: Record<string, string>;
  /** Added after the manifests' environment (e.g. ports that must not clash on the host network). */
  envExtra?: Record<string, string>;
}

/** The container's environment as the kubelet builds it: envFrom first, then env; secretKeyRef/configMapKeyRef resolved from objs. */
export function containerEnv(objs: K8sObject[], c: Record<string, any>): Record<string, string> {
  const data = (kind: string, name: string): Record<string, string> => {
    const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
    if (!o) throw new Error(`container ${c.name}: ${kind} ${name} is not in the manifests`);
    const b64 = Object.fromEntries(Object.entries((o.data ?? {}) as Record<string, string>).map(([k, v]) => [k, kind === 'Secret' ? Buffer.from(v, 'base64').toString() : v]));
    return { ...b64, ...(o.stringData ?? {}) };
  };
  const env: Record<string, string> = {};
  for (const f of c.envFrom ?? []) Object.assign(env, f.secretRef ? data('Secret', f.secretRef.name) : data('ConfigMap', f.configMapRef.name));
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
    if (ref) env[e.name] = data(e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap', ref.name)[ref.key]!;
    else env[e.name] = expandVars(String(e.value ?? ''), env);
  }
  return env;
}

/** Kubernetes' $(VAR) expansion: known variables are replaced, $$ is a literal $, anything else stays. */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => (m === '$$' ? '$' : name !== undefined && name in env ? env[name]! : m));
}

/** `podman run` arguments (after `run`) that run container c of workload w as the manifests declare it. */
export function podmanRunArgs(objs: K8sObject[], w: K8sObject, c: Record<string, any>, image: string, o: AsDeclared): string[] {
  const pod = w.spec.template.spec.securityContext ?? {};
  const sc = { ...pod, ...c.securityContext };
  const env = { ...containerEnv(objs, c), ...o.envOverrides };
  for (const k of Object.keys(o.envOverrides ?? {})) if (!(k in containerEnv(objs, c))) throw new Error(`container ${c.name} declares no ${k} to override`);
  Object.assign(env, o.envExtra);
  const args = ['--network', 'host'];
  if (sc.runAsUser !== undefined) args.push('--user', `${sc.runAsUser}:${sc.runAsGroup ?? sc.runAsUser}`);
  if (sc.readOnlyRootFilesystem) args.push('--read-only', '--read-only-tmpfs=false');
  if (sc.allowPrivilegeEscalation === false) args.push('--security-opt', 'no-new-privileges');
  for (const cap of sc.capabilities?.drop ?? []) args.push('--cap-drop', cap);
  for (const cap of sc.capabilities?.add ?? []) args.push('--cap-add', cap);
  for (const m of c.volumeMounts ?? []) {
    const host = o.volumes[m.name];
    if (!host) throw new Error(`container ${c.name}: no host directory for volume ${m.name}`);
    args.push('-v', `${host}:${m.mountPath}${m.readOnly ? ':ro' : ''}`);
  }
  for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`);
  if (c.command) args.push('--entrypoint', JSON.stringify(c.command));
  args.push(image, ...(c.args ?? []).map((a: string) => expandVars(a, env)));
  return args;
}
