/**
 * p2p: a peer-to-peer group chat node and the reactive operators it is built from.
 * @packageDocumentation
 */
export * from './protocol/index.js';
export * from './operators/index.js';
export * from './transport/index.js';
export * from './node/index.js';
export * from './store/index.js';
export * from './security/index.js';
export { main } from './cli/main.js';
