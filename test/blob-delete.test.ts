/**
 * Issue 8, defect 9: a DELETE of a blob that a manifest uses answered 202,
 * the snapshot stopped pulling and verify still said ok. Now the delete is
 * refused (405 UNSUPPORTED naming the manifests) while a manifest of the
 * repository references the blob, and verify reports manifests whose blobs
 * (or child manifests) are missing.
 */
import { describe, expect, test } from 'vitest';
import { useRegistry, type TestServer } from './helpers/server.js';
import { Oci, OCI_INDEX, prng, sha } from './helpers/oci.js';
import { verifyStore } from '../storage/maintenance/verify.js';
import type { Digest } from '../storage/digest.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => {
  s = r.s;
  oci = r.oci;
});

describe('blob DELETE and verify (defect 9)', () => {
  test('a blob a manifest uses cannot be deleted (405, naming the manifest); it pulls on; once the manifest is gone it can', async () => {
    const layer = prng(300_000, 9);
    const img = await oci.pushImage('del/r', 'v1', layer);
    const r = await oci.req('DELETE', `/v2/del/r/blobs/${img.layerDigest}`);
    expect(r.status).toBe(405);
    const body = (await r.json()) as { errors: Array<{ code: string; message: string; detail: { manifests: string[] } }> };
    expect(body.errors[0]!.code).toBe('UNSUPPORTED');
    expect(body.errors[0]!.detail.manifests).toEqual([img.digest]);
    expect(body.errors[0]!.message).toContain(img.digest);
    // The config blob too.
    expect((await oci.req('DELETE', `/v2/del/r/blobs/${sha('{}')}`)).status).toBe(405);
    const got = await oci.req('GET', `/v2/del/r/blobs/${img.layerDigest}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(layer)).toBe(true);
    expect((await verifyStore(s.store)).ok).toBe(true);
    // Delete the manifest first: then the blob goes.
    expect((await oci.req('DELETE', `/v2/del/r/manifests/${img.digest}`)).status).toBe(202);
    expect((await oci.req('DELETE', `/v2/del/r/blobs/${img.layerDigest}`)).status).toBe(202);
    expect((await oci.req('GET', `/v2/del/r/blobs/${img.layerDigest}`)).status).toBe(404);
  });

  test('a blob used only by another repository\'s manifest can be deleted from this one', async () => {
    const layer = prng(100_000, 10);
    await oci.pushImage('del/a', 'v1', layer);
    const digest = await oci.pushBlob('del/b', layer);
    expect((await oci.req('DELETE', `/v2/del/b/blobs/${digest}`)).status).toBe(202);
    expect((await oci.req('GET', `/v2/del/a/blobs/${digest}`)).status).toBe(200);
  });

  test('verify reports a manifest whose blob is gone and one whose child manifest is gone, naming the snapshots', async () => {
    const layer = prng(200_000, 11);
    const img = await oci.pushImage('del/v', 'broken', layer);
    const child = await oci.pushImage('del/v', 'child', prng(50_000, 12));
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: child.digest, size: Buffer.byteLength(child.body) }] };
    await oci.pushManifest('del/v', 'multi', index, OCI_INDEX);
    expect((await verifyStore(s.store)).ok).toBe(true);
    // What the old DELETE did (and what a registry upgraded from it may hold): the blob unlinked under the manifest.
    await s.store.meta.unlinkBlob('del/v', img.layerDigest as Digest);
    // An index whose child manifest was deleted (OCI allows deleting a manifest an index lists).
    expect((await oci.req('DELETE', `/v2/del/v/manifests/${child.digest}`)).status).toBe(202);
    const report = await verifyStore(s.store);
    expect(report.ok).toBe(false);
    const missingBlob = report.problems.find((p) => p.kind === 'blob-missing');
    expect(missingBlob?.digest).toBe(img.layerDigest);
    expect(missingBlob?.message).toContain(`del/v@${img.digest}`);
    expect(report.problems.find((p) => p.kind === 'manifest-missing')?.digest).toBe(child.digest);
    expect(report.snapshots).toContain('del/v:broken');
    expect(report.snapshots).toContain('del/v:multi');
  });
});
