import { filter, type MonoTypeOperatorFunction } from 'rxjs';
import { LRUCache } from 'lru-cache';
import type { ChatFrame } from '../protocol/frames.js';
import { nodeIdOf } from '../security/identity.js';
import { NETWORK_TAG_BYTES } from '../security/network-key.js';
import { verifyChat } from '../security/sign.js';
import type { Inbound } from './types.js';

/** Options of {@link verifySignatures}. */
export interface VerifyOptions {
  /** Tag of the network this node is in (`networkTag(networkKey)`): signatures are bound to it. */
  readonly network: Uint8Array;
  /** Called for each message dropped, with the reason; the node penalises the peer that sent it. */
  readonly onInvalid?: (message: Inbound<ChatFrame>, reason: string) => void;
}

/**
 * Passes each message whose signature is valid for its content, its sender's key and this network,
 * and whose `from` is the id of that key; drops (and reports through `onInvalid`) the rest: forged,
 * tampered or from another network. Messages of this node (`peer: null`) pass unchecked.
 *
 * @throws {RangeError} at call time when `network` is not a 32-byte tag.
 *
 * Stateless: place it after the cheap duplicate checks, so each message is verified once. Completes
 * and errors with the source; a throwing `onInvalid` becomes an error notification.
 */
export function verifySignatures(options: VerifyOptions): MonoTypeOperatorFunction<Inbound<ChatFrame>> {
  const { network, onInvalid } = options;
  if (network.length !== NETWORK_TAG_BYTES) {
    throw new RangeError(
      `verifySignatures: network must be a ${NETWORK_TAG_BYTES}-byte tag, got ${network.length}`,
    );
  }
  // The id of each sender key, by its hex: a chat has few authors, and hashing a key per message
  // is a measurable share of the check. 1,024 keys is far more than one network's active senders.
  const ids = new LRUCache<string, string>({ max: 1024 });
  return filter((message) => {
    if (message.peer === null) return true;
    const { frame } = message;
    const publicKey = Buffer.from(frame.key, 'hex');
    let id = ids.get(frame.key);
    if (id === undefined) {
      id = nodeIdOf(publicKey);
      ids.set(frame.key, id);
    }
    let reason: string | undefined;
    if (id !== frame.from) reason = 'its sender id is not the id of its key';
    else {
      const fields = {
        id: frame.id,
        publicKey,
        nick: frame.nick,
        ts: frame.ts,
        text: frame.text,
        seq: frame.seq,
      };
      if (!verifyChat(fields, Buffer.from(frame.sig, 'base64url'), network))
        reason = 'its signature does not verify';
    }
    if (reason === undefined) return true;
    onInvalid?.(message, reason);
    return false;
  });
}
