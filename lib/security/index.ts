/** Security building blocks: identities, the Noise handshake, message signatures, network keys. */
export * from './cipher.js';
export { isSecurityError, SecurityError, type SecurityErrorCode } from './errors.js';
export * from './identity.js';
export * from './network-key.js';
export * from './noise.js';
export * from './sign.js';
