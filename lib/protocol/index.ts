export * from './address.js';
export * from './codec.js';
export * from './errors.js';
export * from './frames.js';
