export * from './message-store.js';
