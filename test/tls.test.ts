/**
 * TLS and auth with real clients: a CA and a server certificate made with
 * openssl; `snapyard serve --tls-cert --tls-key --htpasswd --access` run as
 * a process; skopeo (--creds, --cert-dir) and the snapyard CLI (--creds,
 * --ca-cert, SNAPYARD_CA_CERT, --insecure) against it; the certificate
 * rotated with SIGHUP.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { runTool } from './helpers/qcow2-fixtures.js';
import { BIN, cleanEnv, cliOk, runCli } from './helpers/cli.js';
import { prng } from './helpers/oci.js';

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

let dir: string;
let server: ChildProcess;
let port: number;
let env: NodeJS.ProcessEnv;
let certDir: string;

async function openssl(...args: string[]): Promise<void> {
  await runTool('openssl', args, { cwd: dir });
}

/** A server certificate for 127.0.0.1 signed by the test CA; `serial` tells two apart. */
async function serverCert(name: string, serial: string): Promise<void> {
  await openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=127.0.0.1');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-set_serial', serial, '-out', `${name}.crt`, '-days', '2', '-extfile', 'san.ext');
}

/** The serial number of the certificate the server presents now. */
function presentedSerial(): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port, ca: readFileSync(join(dir, 'ca.crt')), servername: 'localhost' }, () => {
      const serial = sock.getPeerCertificate().serialNumber;
      sock.end();
      resolve(serial);
    });
    sock.on('error', reject);
  });
}

async function skopeo(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const policy = join(dir, 'policy.json');
  return runTool('skopeo', ['--policy', policy, '--registries-conf', join(dir, 'registries.conf'), '--tmpdir', join(dir, 'skopeo-tmp'), ...args], { env: { ...env, TMPDIR: join(dir, 'skopeo-tmp') } });
}

/** An OCI image layout holding one artifact manifest over `layer`. */
function writeLayout(at: string, tag: string, layer: Buffer): { manifestDigest: string } {
  mkdirSync(join(at, 'blobs', 'sha256'), { recursive: true });
  const put = (b: Buffer) => {
    const d = sha256(b);
    writeFileSync(join(at, 'blobs', 'sha256', d.slice(7)), b);
    return d;
  };
  writeFileSync(join(at, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const cfg = put(Buffer.from('{}'));
  const ld = put(layer);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.snapyard.qcow2',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: cfg, size: 2 },
    layers: [{ mediaType: 'application/vnd.snapyard.qcow2.v1', digest: ld, size: layer.length }],
  }));
  const md = put(manifest);
  writeFileSync(join(at, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return { manifestDigest: md };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'snapyard-tls-'));
  env = cleanEnv({ HOME: dir });
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=snapyard test CA');
  await serverCert('one', '1001');
  await serverCert('two', '2002');
  writeFileSync(join(dir, 'tls.crt'), readFileSync(join(dir, 'one.crt')));
  writeFileSync(join(dir, 'tls.key'), readFileSync(join(dir, 'one.key')));
  certDir = join(dir, 'certs.d');
  mkdirSync(certDir);
  writeFileSync(join(certDir, 'ca.crt'), readFileSync(join(dir, 'ca.crt')));
  mkdirSync(join(dir, 'skopeo-tmp'));
  writeFileSync(join(dir, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  writeFileSync(join(dir, 'registries.conf'), '');
  await cliOk(['passwd', join(dir, 'htpasswd'), 'alice'], { input: 'alice-pw\n' });
  await cliOk(['passwd', join(dir, 'htpasswd'), 'bob'], { input: 'bob-pw\n' });
  writeFileSync(join(dir, 'access.yaml'), 'rules:\n  - users: [alice]\n    repositories: ["*"]\n    actions: [pull, push, delete, admin]\n  - users: [bob]\n    repositories: ["win98/*"]\n    actions: [pull]\n');
  server = spawn(process.execPath, [BIN, 'serve', '--data', join(dir, 'data'), '--host', '127.0.0.1', '--port', '0', '--tls-cert', join(dir, 'tls.crt'), '--tls-key', join(dir, 'tls.key'), '--htpasswd', join(dir, 'htpasswd'), '--access', join(dir, 'access.yaml')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  port = await new Promise<number>((resolve, reject) => {
    let out = '';
    server.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"port":(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    server.on('exit', (c) => reject(new Error(`serve exited ${c}: ${out}`)));
  });
}, 60_000);

afterAll(async () => {
  server?.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('https with a certificate from a private CA', () => {
  test('skopeo --dest-creds/--dest-cert-dir pushes, a pull-only user inspects and copies back byte-exact, and cannot push', async () => {
    const layer = prng(2 * 1024 * 1024, 3);
    const { manifestDigest } = writeLayout(join(dir, 'layout'), 'v1', layer);
    const reg = `docker://127.0.0.1:${port}`;
    await skopeo(['copy', '--preserve-digests', '--dest-cert-dir', certDir, '--dest-creds', 'alice:alice-pw', `oci:${join(dir, 'layout')}:v1`, `${reg}/win98/games:v1`]);
    const raw = await skopeo(['inspect', '--raw', '--cert-dir', certDir, '--creds', 'bob:bob-pw', `${reg}/win98/games:v1`]);
    expect(sha256(Buffer.from(raw.stdout))).toBe(manifestDigest);
    await skopeo(['copy', '--src-cert-dir', certDir, '--src-creds', 'bob:bob-pw', `${reg}/win98/games:v1`, `oci:${join(dir, 'back')}:v1`]);
    const back = readFileSync(join(dir, 'back', 'blobs', 'sha256', sha256(layer).slice(7)));
    expect(back.equals(layer)).toBe(true);
    await expect(skopeo(['copy', '--dest-cert-dir', certDir, '--dest-creds', 'bob:bob-pw', `oci:${join(dir, 'layout')}:v1`, `${reg}/win98/games:v2`])).rejects.toThrow(/denied|unauthorized|401|403/i);
    await expect(skopeo(['inspect', '--raw', '--cert-dir', certDir, '--creds', 'bob:wrong', `${reg}/win98/games:v1`])).rejects.toThrow(/unauthorized|401|invalid username/i);
    // Without the CA, skopeo refuses the certificate.
    await expect(skopeo(['inspect', '--raw', '--creds', 'bob:bob-pw', `${reg}/win98/games:v1`])).rejects.toThrow(/certificate/i);
  });

  test('snapyard push/pull with --ca-cert (and SNAPYARD_CA_CERT), host:port meaning https; without the CA a one-line TLS error; --insecure skips the check', async () => {
    const file = join(dir, 'disk.img');
    writeFileSync(file, prng(1024 * 1024, 9));
    const host = `127.0.0.1:${port}`;
    await cliOk(['push', 'win98/cli:v1', file, '--registry', host, '--ca-cert', join(dir, 'ca.crt'), '--creds', 'alice:alice-pw', '--cache', join(dir, 'c1')], { env });
    const out = join(dir, 'out.img');
    await cliOk(['pull', 'win98/cli:v1', '-o', out, '--registry', `https://${host}`, '--creds', 'bob:bob-pw', '--cache', join(dir, 'c2')], { env: { ...env, SNAPYARD_CA_CERT: join(dir, 'ca.crt') } });
    expect(readFileSync(out).equals(readFileSync(file))).toBe(true);
    const untrusted = await runCli(['ls', 'win98/cli', '--registry', host, '--creds', 'bob:bob-pw'], { env });
    expect(untrusted.code).toBe(2);
    expect(untrusted.stderr.trim().split('\n')).toHaveLength(1);
    expect(untrusted.stderr).toMatch(/^snapyard: TLS_FAILED: .*--ca-cert/);
    const insecure = await runCli(['ls', 'win98/cli', '--registry', `https://${host}`, '--insecure', '--creds', 'bob:bob-pw', '--json'], { env });
    expect(insecure.code).toBe(0);
    expect(JSON.parse(insecure.stdout)).toHaveLength(1);
  });

  test('SIGHUP re-reads the certificate and key: new connections get the new certificate, the server keeps serving', async () => {
    expect(await presentedSerial()).toBe('03E9'); // 1001
    writeFileSync(join(dir, 'tls.crt'), readFileSync(join(dir, 'two.crt')));
    writeFileSync(join(dir, 'tls.key'), readFileSync(join(dir, 'two.key')));
    server.kill('SIGHUP');
    let serial = '';
    for (let i = 0; i < 50 && serial !== '07D2'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      serial = await presentedSerial();
    }
    expect(serial).toBe('07D2'); // 2002
    // A broken pair on the next SIGHUP keeps the current certificate.
    writeFileSync(join(dir, 'tls.key'), 'not a key');
    server.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 300));
    expect(await presentedSerial()).toBe('07D2');
    expect(server.exitCode).toBeNull();
  });
});
