export * from './decode.js';
export * from './dedup.js';
export * from './filter-map.js';
export * from './merge-peers.js';
export * from './relay.js';
export * from './remember.js';
export * from './verify.js';
export type * from './types.js';
export * from './rate-limit.js';
