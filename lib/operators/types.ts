import type { BinaryChatLayout, Frame } from '../protocol/frames.js';

/** The connected node a frame came from: its node id and the host its socket connects from. */
export interface PeerRef {
  readonly id: string;
  readonly host: string;
  /**
   * The peers this peer said (in its latest peer list before this frame) it is connected to. A
   * message it delivers has gone to them from it, or from whoever it had the message from, so
   * {@link relay} skips them (with a view, only those whose own list names this peer back).
   * Absent: unknown, nobody is skipped.
   */
  readonly neighbours?: ReadonlySet<string>;
  /**
   * The peer's Ed25519 public key (hex), proven by the handshake of the connection. A message whose
   * key it is came from its author directly.
   */
  readonly key?: string;
}

/** One frame as it enters the node's pipeline. */
export interface Inbound<F extends Frame = Frame> {
  /** The peer that delivered it, or `null` for a message this node sends itself. */
  readonly peer: PeerRef | null;
  readonly frame: F;
  /** The frame's payload bytes as received, so a relay can forward them without re-encoding. */
  readonly payload: Buffer;
  /**
   * For a chat frame in the binary encoding, where its parts lie in `payload` (`binaryChatLayout`),
   * as read when it was parsed: `verifySignatures` checks it with these instead of reading them
   * again. Absent: read there when needed.
   */
  readonly layout?: BinaryChatLayout | undefined;
  /**
   * Set by `verifySignatures` on a chat message it let through without checking its signature (its
   * author delivered it over the authenticated channel, and it goes nowhere else).
   */
  readonly unverified?: true;
}
