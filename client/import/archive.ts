/**
 * Unpacks an image archive (oci-archive, docker-archive: plain tar files) into
 * a directory, streaming: only regular files and directories, names that
 * stay inside the directory; the output is bounded by the archive's size.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join, normalize, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { SnapyardError } from '../../storage/errors.js';

export async function unpackArchive(file: string, dir: string): Promise<void> {
  const tar = extract();
  tar.on('entry', (header, stream, next) => {
    const rel = normalize(header.name).replace(/^(\.\/|\/)+/, '');
    const skip = () => {
      stream.on('end', () => next());
      stream.resume();
    };
    if (rel === '' || rel === '.' || rel.split(sep).includes('..')) return skip();
    const target = join(dir, rel);
    if (header.type === 'directory') {
      mkdir(target, { recursive: true }).then(skip, next);
      return;
    }
    if (header.type !== 'file' && header.type !== 'contiguous-file') return skip();
    mkdir(dirname(target), { recursive: true })
      .then(() => pipeline(stream, createWriteStream(target)))
      .then(() => next(), next);
  });
  try {
    await pipeline(createReadStream(file), tar);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOSPC') throw e;
    throw new SnapyardError('INVALID_ARGUMENT', `archive ${file} is not a valid tar file: ${(e as Error).message}`, { cause: e });
  }
}
