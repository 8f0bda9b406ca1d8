/** Stable codes of everything a peer can do wrong on the wire. Append-only: scripts match on them. */
export type ProtocolErrorCode =
  | 'ERR_FRAME_TOO_LARGE'
  | 'ERR_EMPTY_FRAME'
  | 'ERR_UNEXPECTED_EOF'
  | 'ERR_BAD_JSON'
  | 'ERR_BAD_FRAME'
  | 'ERR_UNKNOWN_TYPE'
  | 'ERR_EXPECTED_HELLO'
  | 'ERR_DUPLICATE_HELLO'
  | 'ERR_PROTOCOL_VERSION'
  | 'ERR_HELLO_TIMEOUT'
  | 'ERR_PEER_TIMEOUT'
  | 'ERR_OUTBOX_OVERFLOW'
  | 'ERR_BAD_SIGNATURE'
  | 'ERR_BAD_PACK';

/**
 * A peer broke the protocol. Ends that peer's connection only; never a bug of this node.
 * Bugs stay `TypeError`/`RangeError` and are not caught as protocol errors.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** True for errors a peer (not this node) caused: protocol violations and socket-level failures. */
export function isPeerError(err: unknown): boolean {
  if (err instanceof ProtocolError) return true;
  if (err instanceof TypeError || err instanceof RangeError) return false;
  // Node socket errors carry a string code such as ECONNRESET, EPIPE or ETIMEDOUT.
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}
