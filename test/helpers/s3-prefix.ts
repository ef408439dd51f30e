/**
 * Emptying a test's bucket prefix after it (RGW's memstore keeps objects in
 * RAM for the whole run).
 */
import { S3PackDriver } from '../../storage/chunks/s3-pack-driver.js';
import type { TestS3 } from './services.js';

/** Deletes every pack under `location` (an s3:// store URL of the run's RGW). */
export async function emptyS3Prefix(s3: TestS3, location: string): Promise<void> {
  const d = new S3PackDriver({ location, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  try {
    const names: string[] = [];
    for await (const p of d.list()) names.push(p.name);
    await d.delete(names);
  } finally {
    await d.close();
  }
}
