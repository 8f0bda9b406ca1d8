export * from './log.js';
export * from './node.js';
