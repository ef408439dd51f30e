/** A place images are imported from: its tags, and the layers of one image. */
import type { Platform } from './image-manifest.js';
import type { LayerInput } from './layer-scan.js';

export interface SourceImage {
  /** The source's manifest digest of the image (the platform's one, for an index). */
  manifestDigest: string;
  /** Bottom layer first. */
  layers: LayerInput[];
}

export interface ImageSource {
  /** How messages name it, e.g. docker://host/repo */
  readonly name: string;
  /** The tag (or digest) SRC named, or null when it named none. */
  readonly reference: string | null;
  /** Every tag (for --all-tags). */
  tags(): Promise<string[]>;
  /** The image under a tag or digest (null: the one image an archive holds, or `latest`). */
  image(reference: string | null, platform: Platform): Promise<SourceImage>;
  close(): Promise<void>;
}
