/**
 * The parts of undici the registry client uses (Pool, Agent, and the
 * request API on their prototype), loaded without undici's entry point.
 * That entry loads all of undici (fetch, WebSocket, mocks, HTTP caches,
 * proxies): 160 ms of every command's start on the 2-core build machine,
 * against 56 ms for these, and `snapyard mount`'s first read waits for it.
 * The modules are undici's own (the entry point requires the same files, so
 * the classes are the same); `Object.assign(Dispatcher.prototype, api)` is
 * what the entry point does to give dispatchers their request() method.
 * undici's version is pinned in package.json, and every test that talks to a
 * registry goes through here.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const requireCjs = createRequire(import.meta.url);
const Dispatcher = requireCjs('undici/lib/dispatcher/dispatcher.js') as { prototype: object };
Object.assign(Dispatcher.prototype, requireCjs('undici/lib/api/index.js') as object);

export const Pool = requireCjs('undici/lib/dispatcher/pool.js') as typeof Undici.Pool;
export const Agent = requireCjs('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export type Pool = Undici.Pool;
export type Agent = Undici.Agent;
