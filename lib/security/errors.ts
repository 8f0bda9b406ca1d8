/**
 * Stable codes of everything that can fail in the security layer. Append-only: scripts and logs match
 * on them.
 *
 * - `ERR_HANDSHAKE`: a handshake message is malformed, out of order, fails to decrypt, or the peer
 *   closed the connection in the middle of the handshake.
 * - `ERR_NETWORK_KEY`: the peer is not in this node's network (a different network key, or one side
 *   has a key and the other has none).
 * - `ERR_IDENTITY`: the peer's proof of its identity key does not verify.
 * - `ERR_UNEXPECTED_PEER`: the peer proved an identity other than the one this node dialled.
 * - `ERR_DECRYPT`: a transport message was tampered with, truncated, replayed or reordered.
 * - `ERR_NONCE_EXHAUSTED`: a session sent or received 2^53 - 1 messages; it must be replaced.
 * - `ERR_IDENTITY_FILE`: the identity key file is unreadable, malformed or readable by others.
 * - `ERR_NETWORK_KEY_FILE`: the network key file is missing, malformed or readable by others.
 */
export type SecurityErrorCode =
  | 'ERR_HANDSHAKE'
  | 'ERR_NETWORK_KEY'
  | 'ERR_IDENTITY'
  | 'ERR_UNEXPECTED_PEER'
  | 'ERR_DECRYPT'
  | 'ERR_NONCE_EXHAUSTED'
  | 'ERR_IDENTITY_FILE'
  | 'ERR_NETWORK_KEY_FILE';

/**
 * A security check failed: a peer that cannot prove who it is or that it belongs to the network, a
 * tampered message, or a bad key file. For a peer, it ends that peer's connection only.
 * Bugs stay `TypeError`/`RangeError` and are never wrapped into a SecurityError.
 */
export class SecurityError extends Error {
  override readonly name = 'SecurityError';
  constructor(
    readonly code: SecurityErrorCode,
    message: string,
    options?: { readonly cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True when `err` is a {@link SecurityError}, with `code` when one is given. */
export function isSecurityError(err: unknown, code?: SecurityErrorCode): err is SecurityError {
  return err instanceof SecurityError && (code === undefined || err.code === code);
}

/**
 * Runs `fn` and turns whatever it throws into a SecurityError with `code`, except bugs: a TypeError or
 * RangeError is rethrown as it is.
 */
export function wrapFailure<T>(code: SecurityErrorCode, message: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof TypeError || err instanceof RangeError || err instanceof SecurityError) throw err;
    throw new SecurityError(code, message, { cause: err });
  }
}
