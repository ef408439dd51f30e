/**
 * The ImageSource for a SRC argument. A registry source authenticates with
 * `--src-creds USER:PASS`, else the Docker config files (client/credentials.ts:
 * REGISTRY_AUTH_FILE, DOCKER_CONFIG, ~/.docker/config.json, a mounted
 * .dockerconfigjson) looked up by the source's host; never with the
 * destination's SNAPYARD_USERNAME/PASSWORD.
 */
import { authFiles, credentialsFromFile, parseCreds, type Credentials } from '../credentials.js';
import { Registry, registryUrlOf } from '../registry.js';
import { DockerArchiveSource } from './docker-archive-source.js';
import type { ImageSource } from './image-source.js';
import { LayoutSource } from './layout-source.js';
import { parseSource } from './source-spec.js';
import { RegistrySource } from './registry-source.js';

export interface SourceOptions {
  creds?: string;
  insecure?: boolean;
  caCert?: string;
  tmpDir: string;
  env?: NodeJS.ProcessEnv;
}

function sourceCredentials(hostPort: string, o: SourceOptions): Credentials | null {
  if (o.creds !== undefined) return parseCreds(o.creds);
  for (const f of authFiles(o.env ?? process.env)) {
    const c = credentialsFromFile(f, hostPort);
    if (c) return c;
  }
  return null;
}

export async function openSource(src: string, o: SourceOptions): Promise<ImageSource> {
  const spec = parseSource(src);
  switch (spec.kind) {
    case 'docker': {
      const insecure = o.insecure === true;
      const hostPort = registryUrlOf(spec.host, insecure).host;
      const reg = new Registry(spec.host, { creds: sourceCredentials(hostPort, o), insecure, ...(o.caCert ? { caCert: o.caCert } : {}), connections: 2 });
      return new RegistrySource(reg, spec.repo, spec.reference);
    }
    case 'oci':
      return LayoutSource.open(`oci:${spec.dir}`, spec.dir, spec.tag);
    case 'oci-archive':
      return LayoutSource.openArchive(`oci-archive:${spec.file}`, spec.file, spec.tag, o.tmpDir);
    case 'docker-archive':
      return DockerArchiveSource.open(`docker-archive:${spec.file}`, spec.file, spec.tag, o.tmpDir);
  }
}
