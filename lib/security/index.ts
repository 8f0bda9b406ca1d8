/** Security building blocks: identities, the Noise handshake, message signatures, network keys. */
export * from './cipher.js';
export { isSecurityError, SecurityError, type SecurityErrorCode } from './errors.js';
export * from './identity.js';
export * from './network-key.js';
export * from './noise.js';
// Listed, not `*`: sign.ts also exports test hooks into its module state (forgetCheckedPath,
// checkedPathIsWhole) that are not part of the library.
export {
  SIGNING_PREFIX,
  SIGNED_KIND,
  chatSigningBytes,
  signChat,
  signedChatFrame,
  verifyChat,
  signedChatFrames,
  signedChats,
  verifyChatInBatch,
  verifyBinaryChat,
  type SignedChatFields,
  type SignedChat,
  type BatchCache,
} from './sign.js';
