# The snapyard image: the registry (`snapyard serve`, the default command) and
# the client (`snapyard pull`, `prefetch`, ...) in one. Build: docker build -t snapyard .
# CI builds it with buildah against a local stand-in for the base image when no
# registry is reachable (scripts/container.sh).

FROM node:22-bookworm-slim AS build
# The native addons (better-sqlite3, zstd-napi) compile from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (tsc) would run before the sources are here;
# the addons are then built explicitly.
RUN npm ci --ignore-scripts --no-audit --no-fund --no-update-notifier \
 && npm rebuild better-sqlite3 zstd-napi esbuild
COPY tsconfig.json tsconfig.build.json ./
COPY storage storage
COPY server server
COPY client client
COPY cli cli
COPY bin bin
COPY ui ui
COPY scripts/build-ui.mjs scripts/build-ui.mjs
# Compile, build the web page into dist/ui (preact, uPlot and esbuild are dev
# dependencies: bundled here, not needed at run time), drop the dev dependencies,
# and drop what the addons needed only to compile (sources, object files); the
# .node binaries stay.
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json \
 && node scripts/build-ui.mjs \
 && npm prune --omit=dev --no-audit --no-fund --no-update-notifier \
 && for a in node_modules/better-sqlite3 node_modules/zstd-napi; do \
      find "$a/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} + \
      && find "$a/build/Release" -mindepth 1 -maxdepth 1 ! -name '*.node' -exec rm -rf {} + \
      && find "$a/deps" "$a/src" -type f ! -name 'LICENSE*' -delete; \
    done \
 && rm -f node_modules/better-sqlite3/build/Release/test_extension.node \
 && find node_modules -type d -empty -delete \
 && node -e "new (require('better-sqlite3'))(':memory:').close(); require('zstd-napi').compress(Buffer.from('ok'))"

FROM node:22-bookworm-slim
ENV NODE_ENV=production
# glibc maps buffers of 128 KiB and more on their own and returns them when
# freed (its default threshold grows, and freed 2 MiB batch buffers stayed in
# its heap): peak RSS of a replica serving 10 GETs 461 -> 394 MB
# (docs/deploy-replicas.md).
ENV MALLOC_MMAP_THRESHOLD_=131072
# Two malloc arenas instead of glibc's 8 per core for the main thread, libuv's
# pool and the codec workers: RSS growth from minute 1 to 5 of bench/load.ts
# (auth off, 300 s) 7.5% -> 4.0% in one pair of runs, at the same req/s.
ENV MALLOC_ARENA_MAX=2
# V8's young generation at 4 MiB per semi-space instead of 16: a server holds
# little that is short-lived and large (buffers live outside the heap). Peak
# RSS over a push + pull + variant-update sequence of the bench corpus 304-307
# -> 272-279 MB; one GET of a 1 GB blob 0.90-0.99 -> 0.79-0.88 s
# (docs/deploy-replicas.md). Applies to every snapyard process in the image.
ENV NODE_OPTIONS=--max-semi-space-size=4
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY --from=build /src/bin bin
RUN ln -s /app/bin/snapyard.js /usr/local/bin/snapyard \
 && groupadd --gid 10001 snapyard \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin snapyard \
 && mkdir -p /data \
 && chown 10001:10001 /data
USER 10001:10001
VOLUME /data
EXPOSE 5000
# /healthz on the serve port (SNAPYARD_PORT, default 5000); set
# SNAPYARD_HEALTHCHECK_URL when serving https or on another address.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.SNAPYARD_HEALTHCHECK_URL || 'http://127.0.0.1:' + (process.env.SNAPYARD_PORT || 5000) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["snapyard"]
CMD ["serve", "--data", "/data"]
