import { Buffer } from 'node:buffer';
import type { MonoTypeOperatorFunction } from 'rxjs';
import { filterMap } from './filter-map.js';
import { boundedLru, LastKeyLru } from '../util/lru.js';
import { isBinaryChat, type BinaryChatLayout, type ChatFrame } from '../protocol/frames.js';
import { nodeIdOf } from '../security/identity.js';
import { NETWORK_TAG_BYTES } from '../security/network-key.js';
import { verifyBinaryChat, verifyChat, verifyChatInBatch } from '../security/sign.js';
import type { Inbound } from './types.js';

/** Options of {@link verifySignatures}. */
export interface VerifyOptions {
  /** Tag of the network this node is in (`networkTag(networkKey)`): signatures are bound to it. */
  readonly network: Uint8Array;
  /** Called for each message dropped, with the reason; the node penalises the peer that sent it. */
  readonly onInvalid?: (message: Inbound<ChatFrame>, reason: string) => void;
  /**
   * Messages whose signature need not be checked now: the node passes those its author delivered
   * itself (the handshake proved the channel's key, {@link PeerRef.key}) and that go to nobody
   * else. Only messages whose `key` is the delivering peer's proven key are ever let through
   * unchecked, whatever this returns; they come out with `unverified: true`.
   */
  readonly trusted?: (message: Inbound<ChatFrame>) => boolean;
  /**
   * The checker to use, from {@link chatProblemChecker} for the same `network`: pass the one the
   * rest of the program checks with, so both share its caches (sender ids, checked batches).
   * Default: one of its own.
   */
  readonly checker?: ChatChecker;
}

/**
 * Passes each message whose signature is valid for its content, its sender's key and this network,
 * and whose `from` is the id of that key; drops (and reports through `onInvalid`) the rest: forged,
 * tampered or from another network. Messages of this node (`peer: null`) pass unchecked, and so
 * do those `trusted` vouches for (marked `unverified`).
 *
 * @throws {RangeError} at call time when `network` is not a 32-byte tag.
 *
 * Its only state is the checker's caches (sender ids, checked batches), which change no answer.
 * Place it after the cheap duplicate checks, so each message is verified once. Completes and errors
 * with the source; a throwing `onInvalid` or `trusted` becomes an error notification.
 */
export function verifySignatures(options: VerifyOptions): MonoTypeOperatorFunction<Inbound<ChatFrame>> {
  return filterMap(signatureCheck(options));
}

/**
 * {@link verifySignatures}' test as a plain function, for a pipeline that runs several stages in one
 * step: the message to pass on (marked `unverified` when `trusted` vouched for it), or `undefined`
 * for one dropped (after `onInvalid`).
 * @throws {RangeError} at call time when `network` is not a 32-byte tag.
 */
export function signatureCheck(
  options: VerifyOptions,
): (message: Inbound<ChatFrame>) => Inbound<ChatFrame> | undefined {
  const { network, onInvalid, trusted } = options;
  if (network.length !== NETWORK_TAG_BYTES) {
    throw new RangeError(
      `verifySignatures: network must be a ${NETWORK_TAG_BYTES}-byte tag, got ${network.length}`,
    );
  }
  const problem = options.checker ?? chatProblemChecker(network);
  return (message) => {
    if (message.peer === null) return message;
    let reason: string | undefined;
    // From its author over the channel its key authenticates, going nowhere else: the channel
    // vouches for it; its signature is checked if it is ever sent on.
    if (message.peer.key === message.frame.key && trusted?.(message) === true) {
      // A literal, not a spread (per message, mostly before V8 optimises it): Inbound's fields.
      if (message.peer.id === message.frame.from)
        return { peer: message.peer, frame: message.frame, payload: message.payload, unverified: true };
      reason = 'its sender id is not the id of its key';
    } else reason = problem(message.frame, message.payload, message.layout);
    if (reason === undefined) return message;
    onInvalid?.(message, reason);
    return undefined;
  };
}

/**
 * Why a chat message is not valid (a sentence), or `undefined` when it is. Given the frame's
 * `payload` too, a frame in the binary encoding is checked over those bytes (they must be the
 * bytes the frame was parsed from); given their `layout` as well (`binaryChatLayout` of them, read
 * when the frame was parsed), it is not read again.
 */
export type ChatChecker = (
  frame: ChatFrame,
  payload?: Uint8Array,
  layout?: BinaryChatLayout,
) => string | undefined;

/**
 * A checker of chat messages: returns why `frame` is not a valid message of the network with tag
 * `network` (its `from` is not the id of its key, or its signature does not verify), or `undefined`
 * when it is. Keeps the ids of the last 1,024 sender keys.
 */
export function chatProblemChecker(network: Uint8Array): ChatChecker {
  // The id of each sender key, by its hex: a chat has few authors, and hashing a key per message
  // is a measurable share of the check. 1,024 keys is far more than one network's active senders.
  const ids = new LastKeyLru<string, string>(1024);
  // Batches whose signature checked out (the signed bytes they were checked with): one Ed25519 check per batch.
  const batches = boundedLru<string, string>(64);
  return (frame, payload, layout) => {
    let id = ids.get(frame.key);
    if (id === undefined) {
      id = nodeIdOf(Buffer.from(frame.key, 'hex'));
      ids.set(frame.key, id);
    }
    if (id !== frame.from) return 'its sender id is not the id of its key';
    let valid: boolean;
    // Binary: checked over the bytes received, nothing re-encoded.
    if (payload !== undefined && isBinaryChat(payload))
      valid = verifyBinaryChat(payload, network, batches, layout);
    else {
      const fields = {
        id: frame.id,
        publicKey: Buffer.from(frame.key, 'hex'),
        nick: frame.nick,
        ts: frame.ts,
        text: frame.text,
        seq: frame.seq,
      };
      const sig = Buffer.from(frame.sig, 'base64url');
      valid =
        frame.proof === undefined
          ? verifyChat(fields, sig, network)
          : verifyChatInBatch(fields, frame.proof, sig, network, batches);
    }
    return valid ? undefined : 'its signature does not verify';
  };
}
