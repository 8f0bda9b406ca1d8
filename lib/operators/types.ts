import type { Frame } from '../protocol/frames.js';

/** The connected node a frame came from: its node id and the host its socket connects from. */
export interface PeerRef {
  readonly id: string;
  readonly host: string;
}

/** One frame as it enters the node's pipeline. */
export interface Inbound<F extends Frame = Frame> {
  /** The peer that delivered it, or `null` for a message this node sends itself. */
  readonly peer: PeerRef | null;
  readonly frame: F;
  /** The frame's payload bytes as received, so a relay can forward them without re-encoding. */
  readonly payload: Buffer;
}
