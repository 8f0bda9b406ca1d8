export * from './backoff.js';
export * from './from-socket.js';
export * from './writer.js';
export * from './token-bucket.js';
