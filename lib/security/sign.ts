import { Buffer } from 'node:buffer';
import { sodium } from './sodium.js';
import {
  binaryChatLayout,
  chatPayload,
  putChatBody,
  MAX_BATCH,
  type BinaryChatLayout,
  type ChatFrame,
  type ChatProof,
} from '../protocol/frames.js';
import { PUBLIC_KEY_BYTES, SIGNATURE_BYTES, type Identity } from './identity.js';
import { NETWORK_TAG_BYTES } from './network-key.js';
import type { Mutable } from '../util/mutable.js';
import { bytesView, type SlicingBuffer } from '../protocol/codec.js';

/**
 * Domain-separation prefix of every signed message: names the protocol and its version, and ends in
 * a NUL so that no other string this node signs can start the same way.
 */
export const SIGNING_PREFIX = Buffer.from('p2p-chat-v1\0', 'utf8');

/** Kinds of signed records, one byte after the prefix. Append-only. */
export const SIGNED_KIND = { chat: 1, batch: 2 } as const;

/** The fields of a chat message that its signature covers. */
export interface SignedChatFields {
  /** The message id (ASCII, at most 65,535 bytes; the wire allows 64). */
  readonly id: string;
  /** The sender's raw 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  readonly nick: string;
  /** Sender's clock, ms since the epoch: a safe non-negative integer. */
  readonly ts: number;
  readonly text: string;
  /** Per-sender sequence number, a safe non-negative integer; 0 stands for "none". */
  readonly seq?: number;
}

/**
 * Byte length of a well-formed string in UTF-8. A lone surrogate would be encoded as U+FFFD, so two
 * different strings would sign the same: refused instead.
 */
function utf8Length(name: string, value: string, maxBytes: number): number {
  if (!value.isWellFormed()) throw new RangeError(`${name} contains a lone surrogate`);
  const length = Buffer.byteLength(value, 'utf8');
  if (length > maxBytes) throw new RangeError(`${name} is ${length} bytes, the limit is ${maxBytes}`);
  return length;
}

function checkU64(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a safe non-negative integer, got ${value}`);
  }
  return value;
}

/** Bytes of the signed layout before a message's body: prefix, kind, network tag. */
const SIGNED_HEAD_BYTES = SIGNING_PREFIX.length + 1 + NETWORK_TAG_BYTES;
/** Bytes before the id: the head, then public key, seq, ts. */
const FIXED_BYTES = SIGNED_HEAD_BYTES + PUBLIC_KEY_BYTES + 8 + 8;

/** @throws {RangeError} unless `network` is a 32-byte tag (this node's configuration, not a peer's). */
function checkNetwork(network: Uint8Array): void {
  if (network.length !== NETWORK_TAG_BYTES) {
    throw new RangeError(`a network tag is ${NETWORK_TAG_BYTES} bytes, got ${network.length}`);
  }
}

/** Writes the head of a chat's signed bytes (prefix, kind, network tag) at `at`; returns the offset after it. */
function putSignedHead(out: Uint8Array, at: number, network: Uint8Array): number {
  out.set(SIGNING_PREFIX, at);
  out[at + SIGNING_PREFIX.length] = SIGNED_KIND.chat;
  out.set(network, at + SIGNING_PREFIX.length + 1);
  return at + SIGNED_HEAD_BYTES;
}

/**
 * The bytes a chat signature covers, a fixed binary layout (no JSON canonicalisation to get wrong):
 *
 * ```
 * "p2p-chat-v1\0"            12  domain separation
 * kind = 1 (chat)             1
 * network tag                32  networkTag(key), or the public tag
 * sender public key          32
 * seq                         8  big-endian, 0 when absent
 * ts                          8  big-endian
 * id    length u16 + UTF-8
 * nick  length u16 + UTF-8
 * text  length u32 + UTF-8
 * ```
 *
 * Every variable field is length-prefixed, so two different messages never give the same bytes.
 * @throws {RangeError} for a field out of range: a key or tag of the wrong size, a negative or unsafe
 *   number, a string with a lone surrogate or longer than its length prefix allows.
 */
export function chatSigningBytes(fields: SignedChatFields, network: Uint8Array): Buffer {
  return signingBytesAfter(0, fields, fields.publicKey, network);
}

/**
 * {@link chatSigningBytes} after `lead` bytes left for the caller (a leaf's marker byte): one
 * allocation for both. The key is an argument of its own, not a field: a sender's messages would
 * otherwise each be copied with it (`{ ...m, publicKey }`), and those copies each got a map of their
 * own in V8 (seen with --log-ic), which made every field load here a megamorphic miss.
 */
function signingBytesAfter(
  lead: number,
  fields: Omit<SignedChatFields, 'publicKey'>,
  publicKey: Uint8Array,
  network: Uint8Array,
): Buffer {
  checkNetwork(network);
  if (publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new RangeError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, got ${publicKey.length}`);
  }
  // One allocation, written in place (putChatBody: byte stores, not Buffer's writeUInt*, layers of
  // checks in JavaScript): this runs for every message at every node, mostly before V8 optimises it.
  checkU64('seq', fields.seq ?? 0);
  checkU64('ts', fields.ts);
  const idLength = utf8Length('id', fields.id, 0xffff);
  const nickLength = utf8Length('nick', fields.nick, 0xffff);
  const textLength = utf8Length('text', fields.text, 0xffff_ffff);
  const out = Buffer.allocUnsafe(lead + FIXED_BYTES + 2 + idLength + 2 + nickLength + 4 + textLength);
  const at = putChatBody(out, putSignedHead(out, lead, network), publicKey, fields);
  if (at !== out.length) throw new Error(`chatSigningBytes: wrote ${at} of ${out.length} bytes`); // a bug here
  return out;
}

/**
 * Signs a chat message as `identity`, for the network with tag `network` ({@link networkTag}).
 * @returns the 64-byte Ed25519 signature.
 * @throws {RangeError} for a field out of range (see {@link chatSigningBytes}).
 * @example const sig = signChat(identity, { id, nick, ts, text, seq }, networkTag(networkKey));
 */
export function signChat(
  identity: Identity,
  fields: Omit<SignedChatFields, 'publicKey'>,
  network: Uint8Array,
): Buffer {
  return identity.sign(signingBytesAfter(0, fields, identity.publicKey, network));
}

/**
 * The chat frame of a message signed as `identity` for the network with tag `network`: the fields,
 * the sender's id and key, and the signature, as every node sends its own messages.
 * @throws {RangeError} for a field out of range (see {@link chatSigningBytes}).
 */
export function signedChatFrame(
  identity: Identity,
  fields: Omit<SignedChatFields, 'publicKey' | 'seq'> & { readonly seq: number },
  network: Uint8Array,
): ChatFrame {
  return signBatch(identity, [fields], network, false)[0]!.frame;
}

/** The chat frame of `fields` sent by `identity` with signature `sig` (and `proof`, in a batch). */
function chatFrame(
  identity: Identity,
  fields: Omit<SignedChatFields, 'publicKey' | 'seq'> & { readonly seq: number },
  sig: string,
  proof?: ChatProof,
  key = identity.publicKey.toString('hex'),
): ChatFrame {
  const frame: Mutable<ChatFrame> = {
    type: 'chat',
    id: fields.id,
    nick: fields.nick,
    ts: fields.ts,
    seq: fields.seq,
    text: fields.text,
    from: identity.id,
    key,
    sig,
  };
  if (proof !== undefined) frame.proof = proof; // not a spread: no copy of the frame per message
  return frame;
}

/**
 * True when `signature` is `fields.publicKey`'s signature of the message for the network with tag
 * `network`. False for anything else: a changed field, another network, a signature or key of the
 * wrong size, a field out of range, a key that is not a valid Ed25519 point. Never throws for bytes a
 * peer chose; a TypeError (a field of the wrong type) is a bug of the caller and is thrown.
 * @throws {RangeError} when `network` is not a 32-byte tag (this node's configuration).
 *
 * The caller still checks that the message's `from` equals `nodeIdOf(fields.publicKey)`.
 */
export function verifyChat(fields: SignedChatFields, signature: Uint8Array, network: Uint8Array): boolean {
  checkNetwork(network);
  if (signature.length !== SIGNATURE_BYTES || fields.publicKey.length !== PUBLIC_KEY_BYTES) return false;
  let data: Buffer;
  try {
    data = chatSigningBytes(fields, network);
  } catch (err) {
    if (err instanceof TypeError) throw err;
    return false; // RangeError from a peer's field
  }
  // libsodium rather than node:crypto: about 1.7x faster here, and verification is the largest cost
  // of every message at every node. Its checks are the strict ones (canonical encodings, no
  // small-order keys), so it accepts no signature that node:crypto would refuse.
  return sodium.crypto_sign_verify_detached(signature, data, fields.publicKey);
}

// ---- batches: one signature for many messages ----------------------------------------------------
//
// A node that sends several messages at once (a pasted block of lines) signs them together: each
// message is a leaf of a binary hash tree (BLAKE2b-256), and the signature covers the root. Every
// message still travels, is stored and is checked on its own: it carries the sibling hashes from its
// leaf up (its proof), so a receiver rebuilds the root from the message alone and checks one Ed25519
// signature per batch, not per message (a cache keeps the roots already checked).
//
//   leaf  = H(0x00 || chatSigningBytes(message))        the chat layout above, kind 1
//   node  = H(0x01 || left || right)                    a level's odd last node moves up unchanged
//   signed: "p2p-chat-v1\0" || kind 2 || network tag || public key || u32 n || root
//
// Leaf and node hashes differ in their first byte and the signed bytes bind the batch size, so a
// proof can only place a message where the sender put it (the RFC 9162 tree, with promotion instead
// of its split: the same shape rules for any n).

const HASH_BYTES = 32;

/** Longest path: ten 32-byte hashes (a batch of MAX_BATCH = 1,024), and in base64url. */
const MAX_PATH_BYTES = 10 * HASH_BYTES;
const MAX_PATH_CHARS = Math.ceil((MAX_PATH_BYTES * 4) / 3);
/** Bytes of a node's hash input: 0x01, left, right. */
const NODE_INPUT_BYTES = 1 + 2 * HASH_BYTES;
/** Where PATH_WORK holds a path: after a node's hash input, at a multiple of 8. */
const PATH_AT = 72;
/**
 * Scratch of {@link verifyChatInBatch} (a node's hash input, then the decoded path) and of
 * {@link signedChatFrames} (each path before it is encoded). One per process: both are synchronous
 * and never re-entered.
 */
const PATH_WORK = Buffer.alloc(PATH_AT + MAX_PATH_BYTES + 3);
PATH_WORK[0] = 1; // a node's marker byte (a leaf's is 0)
const NODE_INPUT = PATH_WORK.subarray(0, NODE_INPUT_BYTES);
/** The hash computed last (a leaf, then each node up to the root). */
const NODE_OUTPUT = Buffer.alloc(HASH_BYTES);
// Word views, for comparing and copying hashes with typed-array built-ins: Buffer#copy and
// #compare check their arguments through several wrappers on every call. (Buffer.alloc gives each
// its own ArrayBuffer, at offset 0.) Signed 32-bit words: where V8's small integers are 32 bits (no
// pointer compression, as in Node's own builds) every one read is a small integer, half as many
// loop steps as 16-bit words (a random20 node checking signatures under callgrind: the comparisons
// in joinsAsSibling and sameRest 21,200 -> 14,800 instructions per message). A Uint32Array's
// words above 2^31 would be heap numbers, allocated per read by code V8 has not optimised (most of a
// burst); where small integers are 31 bits (pointer compression) some Int32 words are too: slower
// there, not wrong.
const WORD_BYTES = 4;
const PATH_WORDS = new Int32Array(
  PATH_WORK.buffer,
  PATH_WORK.byteOffset + PATH_AT,
  MAX_PATH_BYTES / WORD_BYTES,
);
const OUTPUT_WORDS = new Int32Array(NODE_OUTPUT.buffer, NODE_OUTPUT.byteOffset, HASH_BYTES / WORD_BYTES);

/** Bytes that name a batch: its signature, the signer's public key and the network tag, in that order. */
const BATCH_ID_BYTES = SIGNATURE_BYTES + PUBLIC_KEY_BYTES + NETWORK_TAG_BYTES;
/**
 * The batch a walk checks ({@link rootIsSigned}), as {@link BATCH_ID_BYTES}: side by side, it is
 * compared with the last path's in one Buffer#equals, not three (each a call through Node's argument
 * checks into C++, most of a burst in code V8 has not optimised), and recorded in one copy.
 */
const BATCH_ID = Buffer.alloc(BATCH_ID_BYTES);

/** The bytes as a latin1 string, one character per byte (a view, no copy). */
function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** H(0x01 || left || right), hashed in PATH_WORK: one call, no array of parts. */
function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HASH_BYTES);
  nodeHashInto(out, left, right);
  return out;
}

/** {@link nodeHash} into `out` (32 bytes); returns `out`. */
function nodeHashInto<T extends Uint8Array>(out: T, left: Uint8Array, right: Uint8Array): T {
  PATH_WORK.set(left, 1);
  PATH_WORK.set(right, 1 + HASH_BYTES);
  sodium.crypto_generichash(out, NODE_INPUT);
  return out;
}

/** A leaf's hash input: 0x00 || chatSigningBytes(message). */
function leafInput(
  fields: Omit<SignedChatFields, 'publicKey'>,
  publicKey: Uint8Array,
  network: Uint8Array,
): Buffer {
  const input = signingBytesAfter(1, fields, publicKey, network);
  input[0] = 0;
  return input;
}

/** The bytes a batch signature covers: prefix, kind 2, network tag, public key, u32 size, root. */
function batchSigningBytes(publicKey: Uint8Array, n: number, root: Uint8Array, network: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(
    SIGNING_PREFIX.length + 1 + NETWORK_TAG_BYTES + PUBLIC_KEY_BYTES + 4 + HASH_BYTES,
  );
  let at = SIGNING_PREFIX.copy(out, 0);
  at = out.writeUInt8(SIGNED_KIND.batch, at);
  out.set(network, at);
  at += NETWORK_TAG_BYTES;
  out.set(publicKey, at);
  at += PUBLIC_KEY_BYTES;
  at = out.writeUInt32BE(n, at);
  out.set(root, at);
  return out;
}

/**
 * The frames of messages sent together as `identity`, for the network with tag `network`: one
 * message is signed alone ({@link signedChatFrame}); 2..MAX_BATCH share one signature of their hash
 * tree's root, each frame carrying its proof.
 * @throws {RangeError} for no message or more than MAX_BATCH, or a field out of range.
 */
export function signedChatFrames(
  identity: Identity,
  messages: readonly (Omit<SignedChatFields, 'publicKey' | 'seq'> & { readonly seq: number })[],
  network: Uint8Array,
): ChatFrame[] {
  return signBatch(identity, messages, network, false).map((m) => m.frame);
}

/** A message as {@link signedChats} gives it: its frame, and that frame in the binary encoding. */
export interface SignedChat {
  readonly frame: ChatFrame;
  /** The frame in the binary encoding (`encodeChat`), laid out from the bytes that were signed. */
  readonly payload: Buffer;
}

/**
 * {@link signedChatFrames}, each frame with its payload in the binary encoding, made from the
 * signed bytes themselves (its body) rather than by laying the fields out again: how a node sends.
 * @throws {RangeError} as {@link signedChatFrames}.
 */
export function signedChats(
  identity: Identity,
  messages: readonly (Omit<SignedChatFields, 'publicKey' | 'seq'> & { readonly seq: number })[],
  network: Uint8Array,
): SignedChat[] {
  // With payloads asked for, every entry has one (signBatch's last argument).
  return signBatch(identity, messages, network, true) as SignedChat[];
}

/** {@link signedChatFrames}, and with `payloads` each frame's binary payload too ({@link signedChats}). */
function signBatch(
  identity: Identity,
  messages: readonly (Omit<SignedChatFields, 'publicKey' | 'seq'> & { readonly seq: number })[],
  network: Uint8Array,
  payloads: boolean,
): { frame: ChatFrame; payload?: Buffer }[] {
  const n = messages.length;
  if (n < 1 || n > MAX_BATCH) throw new RangeError(`a batch holds 1-${MAX_BATCH} messages, got ${n}`);
  const publicKey = identity.publicKey;
  if (n === 1) {
    const fields = messages[0]!;
    const signed = signingBytesAfter(0, fields, publicKey, network);
    const sig = identity.sign(signed);
    const frame = chatFrame(identity, fields, sig.toString('base64url'));
    return [
      payloads
        ? { frame, payload: chatPayload(signed.subarray(SIGNED_HEAD_BYTES), identity.id, sig) }
        : { frame },
    ];
  }
  const inputs = messages.map((m) => leafInput(m, publicKey, network));
  // Every hash of the tree (n leaves, fewer than n nodes above them) in one buffer, each a plain
  // view of it: Buffer.allocUnsafe per hash went through Node's argument checks and pool in
  // JavaScript, about twice per message sent.
  const hashes = Buffer.allocUnsafe(2 * n * HASH_BYTES);
  let free = 0;
  const nextHash = (): Uint8Array => {
    const at = free;
    free += HASH_BYTES;
    return bytesView(hashes, at, free);
  };
  const levels: Uint8Array[][] = [
    inputs.map((input) => {
      const leaf = nextHash();
      sodium.crypto_generichash(leaf, input);
      return leaf;
    }),
  ];
  for (let level = levels[0]!; level.length > 1;) {
    const up: Uint8Array[] = [];
    for (let j = 0; j < level.length; j += 2)
      up.push(j + 1 < level.length ? nodeHashInto(nextHash(), level[j]!, level[j + 1]!) : level[j]!);
    levels.push(up);
    level = up;
  }
  const root = levels[levels.length - 1]![0]!;
  const sigBytes = identity.sign(batchSigningBytes(publicKey, n, root, network));
  const sig = sigBytes.toString('base64url');
  const key = publicKey.toString('hex');
  // Each path is gathered in PATH_WORK's path part and encoded from there: no buffer per message.
  return messages.map((m, i) => {
    let length = 0;
    for (let level = 0, at = i; level < levels.length - 1; level++, at >>= 1) {
      const sibling = levels[level]![at ^ 1];
      if (sibling === undefined) continue;
      PATH_WORK.set(sibling, PATH_AT + length);
      length += HASH_BYTES;
    }
    // base64urlSlice and plain views: Buffer#toString and #subarray run their checks in JavaScript.
    const path = (PATH_WORK as SlicingBuffer).base64urlSlice(PATH_AT, PATH_AT + length);
    const frame = chatFrame(identity, m, sig, { i, n, path }, key);
    if (!payloads) return { frame };
    const pathBytes = bytesView(PATH_WORK, PATH_AT, PATH_AT + length);
    // The leaf's input is 0x00 || the signed bytes: the body follows their head.
    const input = inputs[i]!;
    const body = bytesView(input, 1 + SIGNED_HEAD_BYTES, input.length);
    return { frame, payload: chatPayload(body, identity.id, sigBytes, { i, n, path: pathBytes }) };
  });
}

/**
 * Batches whose signature checked out: per signature and key, the signed bytes (size and root). A
 * message whose proof rebuilds the same root needs no Ed25519 check again. The whole proof is always
 * checked: an accepted message is one that every node accepts, cached or not.
 */
export interface BatchCache {
  get(key: string): string | undefined;
  set(key: string, signed: string): unknown;
}

/**
 * True when `signature` is `fields.publicKey`'s signature of the root of a batch in which `proof`
 * places this message, for the network with tag `network`. False for anything else (see
 * {@link verifyChat}). With `cache`, each batch's signature is verified once; each message costs
 * its path's hashes (at most ten).
 */
export function verifyChatInBatch(
  fields: SignedChatFields,
  proof: ChatProof,
  signature: Uint8Array,
  network: Uint8Array,
  cache?: BatchCache,
): boolean {
  checkNetwork(network);
  if (signature.length !== SIGNATURE_BYTES || fields.publicKey.length !== PUBLIC_KEY_BYTES) return false;
  if (proof.i >= proof.n || proof.n > MAX_BATCH) return false;
  // The path is decoded in PATH_WORK after a node's hash input (0x01 || left || right), and each
  // level is hashed there: no buffer per level (this runs for every message at every node, most of
  // it before V8 has optimised any of it).
  if (proof.path.length > MAX_PATH_CHARS) return false;
  const pathBytes = PATH_WORK.write(proof.path, PATH_AT, 'base64url');
  if (pathBytes % HASH_BYTES !== 0) return false;
  try {
    sodium.crypto_generichash(NODE_OUTPUT, leafInput(fields, fields.publicKey, network));
  } catch (err) {
    if (err instanceof TypeError) throw err;
    return false; // RangeError from a peer's field
  }
  return rootIsSigned(fields.publicKey, proof.i, proof.n, pathBytes, signature, network, cache);
}

/** Levels of a path walk: the leaf, then each node up to the root (at most ten steps up). */
const MAX_LEVELS = MAX_PATH_BYTES / HASH_BYTES + 1;

/**
 * The last batch path that checked out (see {@link rootIsSigned}): its batch (signature, key,
 * network, size), its position and path, and the node reached at each level of its walk with the
 * path bytes used below it. Messages of a batch mostly arrive one after another, and the paths of
 * two neighbours join a level or two above their leaves: from where a path joins this one with the
 * same node and the same rest of the path, the rest of its walk would repeat this one's to the same
 * root, so it ends there, accepted, and becomes the last path; so does a walk that meets it as its
 * sibling ({@link joinsAsSibling}), one level lower. Answers never change, only the number of hashes
 * (in order, about 2 per message instead of one per level, and no signed bytes rebuilt nor looked
 * up).
 */
class CheckedPath {
  valid = false;
  n = 0;
  i = 0;
  pathBytes = 0;
  /** Its batch's signature, key and network, laid out as {@link BATCH_ID}. */
  readonly batch = Buffer.alloc(BATCH_ID_BYTES);
  readonly path = new Int32Array(MAX_PATH_BYTES / WORD_BYTES);
  /** The node at level `l` at word `l * 16` (level 0: the leaf). */
  readonly nodes = new Int32Array((MAX_LEVELS * HASH_BYTES) / WORD_BYTES);
  /** Path bytes used below level `l`. */
  readonly usedBelow = new Int32Array(MAX_LEVELS);

  /**
   * Same batch as the walk's: same size, and signature, key and network ({@link BATCH_ID}). The
   * signature covers the other three.
   */
  sameBatch(n: number): boolean {
    return this.valid && this.n === n && this.batch.equals(BATCH_ID);
  }

  /**
   * True when the walk of message `i`'s path of `pathBytes` bytes (in PATH_WORK), at level `level`
   * with its node in NODE_OUTPUT and `used` of its bytes used below, joins this one: the same
   * position on that level, the same node and the same rest of the path (its length first: a
   * cheap early no).
   */
  joins(i: number, level: number, used: number, pathBytes: number): boolean {
    const mine = this.usedBelow[level]!;
    if (this.i >> level !== i >> level || pathBytes - used !== this.pathBytes - mine) return false;
    const nodes = this.nodes;
    for (let w = 0, at = level * (HASH_BYTES / WORD_BYTES); w < HASH_BYTES / WORD_BYTES; w++) {
      if (OUTPUT_WORDS[w] !== nodes[at + w]) return false;
    }
    return this.sameRest(used, mine, pathBytes);
  }

  /**
   * True when the walk's path from byte `used` to its end (`pathBytes`, in PATH_WORK) is this path's
   * from byte `mine` (the lengths are checked by the caller).
   */
  private sameRest(used: number, mine: number, pathBytes: number): boolean {
    const path = this.path;
    for (let w = used / WORD_BYTES, v = mine / WORD_BYTES, end = pathBytes / WORD_BYTES; w < end; w++, v++) {
      if (PATH_WORDS[w] !== path[v]) return false;
    }
    return true;
  }

  /**
   * True when the walk of message `i` (as for {@link joins}) meets this one as its sibling at
   * `level`: the positions are the two children of one node, the walk's node is this path's
   * sibling there and the walk's sibling (the next hash of its path) is this path's node there, and
   * the rest of both paths above is the same. Both walks then reach the same node one level up (the
   * same two children in the same order), and the same root: the walk is accepted there without
   * hashing that node, one hash fewer than a join at the level above. Messages of a batch arriving in
   * order meet the one before this way: message `i` at the level of its lowest set bit.
   */
  joinsAsSibling(i: number, level: number, used: number, pathBytes: number): boolean {
    if (((i >> level) ^ 1) !== this.i >> level) return false;
    const mine = this.usedBelow[level]!;
    // Both have their sibling at this level (each is the other's; neither is an odd last node nor
    // the root): the hash at `used` and at `mine`, then the same number of bytes above it.
    if (pathBytes - used !== this.pathBytes - mine) return false;
    const nodes = this.nodes;
    const path = this.path;
    const at = level * (HASH_BYTES / WORD_BYTES);
    const ours = used / WORD_BYTES;
    const theirs = mine / WORD_BYTES;
    for (let w = 0; w < HASH_BYTES / WORD_BYTES; w++) {
      if (OUTPUT_WORDS[w] !== path[theirs + w] || PATH_WORDS[ours + w] !== nodes[at + w]) return false;
    }
    return this.sameRest(used + HASH_BYTES, mine + HASH_BYTES, pathBytes);
  }

  /** Records NODE_OUTPUT as the node at `level`, reached with `used` path bytes used below it. */
  reach(level: number, used: number): void {
    this.nodes.set(OUTPUT_WORDS, level * (HASH_BYTES / WORD_BYTES));
    this.usedBelow[level] = used;
  }

  /** Takes `from`'s nodes from `level` up, for a walk that joined it there with `used` bytes used. */
  takeRest(from: CheckedPath, level: number, used: number): void {
    this.nodes.set(from.nodes.subarray(level * (HASH_BYTES / WORD_BYTES)), level * (HASH_BYTES / WORD_BYTES));
    const shift = used - from.usedBelow[level]!;
    for (let l = level; l < MAX_LEVELS; l++) this.usedBelow[l] = from.usedBelow[l]! + shift;
  }

  /** Records the batch ({@link BATCH_ID}) and path of a walk that checked out (its nodes are in place). */
  record(i: number, n: number, pathBytes: number): void {
    this.valid = true;
    this.n = n;
    this.i = i;
    this.pathBytes = pathBytes;
    this.batch.set(BATCH_ID);
    this.path.set(PATH_WORDS.subarray(0, pathBytes / WORD_BYTES));
  }
}

let checkedPath = new CheckedPath();
/** Where a walk's nodes are gathered; swapped with {@link checkedPath} when it checks out. */
let walking = new CheckedPath();

/** Forgets the last checked path (for tests: every answer must be the same without it). */
export function forgetCheckedPath(): void {
  checkedPath.valid = false;
}

/**
 * For tests: whether the last checked path's nodes and offsets are those of a full walk of its
 * leaf and path (what a join relies on), or there is none.
 */
export function checkedPathIsWhole(): boolean {
  const memo = checkedPath;
  if (!memo.valid) return true;
  const bytes = (words: Int32Array): Buffer => Buffer.from(words.buffer, words.byteOffset, words.byteLength);
  const nodes = bytes(memo.nodes);
  const path = bytes(memo.path);
  let node = nodes.subarray(0, HASH_BYTES);
  let used = 0;
  let level = 0;
  for (let at = memo.i, size = memo.n; ; at >>= 1, size = Math.ceil(size / 2), level++) {
    if (!node.equals(nodes.subarray(level * HASH_BYTES, (level + 1) * HASH_BYTES))) return false;
    if (memo.usedBelow[level] !== used) return false;
    if (size <= 1) break;
    if ((at ^ 1) >= size) continue;
    const sibling = path.subarray(used, used + HASH_BYTES);
    used += HASH_BYTES;
    node = at & 1 ? nodeHash(sibling, node) : nodeHash(node, sibling);
  }
  return used === memo.pathBytes;
}

/**
 * The rest of {@link verifyChatInBatch}, with the leaf's hash in NODE_OUTPUT and the path's
 * `pathBytes` bytes in PATH_WORK at PATH_AT: hashes up to the root, and checks the
 * batch signature of it (or finds it in `cache`). Stops early, accepted, where the walk joins the
 * last path that checked out ({@link CheckedPath}).
 */
function rootIsSigned(
  publicKey: Uint8Array,
  i: number,
  n: number,
  pathBytes: number,
  signature: Uint8Array,
  network: Uint8Array,
  cache: BatchCache | undefined,
): boolean {
  // The batch this message claims, to compare with the last path's and to record if it checks out.
  BATCH_ID.set(signature, 0);
  BATCH_ID.set(publicKey, SIGNATURE_BYTES);
  BATCH_ID.set(network, SIGNATURE_BYTES + PUBLIC_KEY_BYTES);
  const last = checkedPath.sameBatch(n) ? checkedPath : undefined;
  const walk = walking;
  let used = 0;
  let level = 0;
  let joined = false;
  for (let at = i, size = n; ; at >>= 1, size = Math.ceil(size / 2), level++) {
    if (last?.joins(i, level, used, pathBytes) === true) {
      walk.takeRest(last, level, used);
      joined = true;
      break;
    }
    walk.reach(level, used);
    if (last?.joinsAsSibling(i, level, used, pathBytes) === true) {
      walk.takeRest(last, level + 1, used + HASH_BYTES);
      joined = true;
      break;
    }
    if (size <= 1) break;
    if ((at ^ 1) >= size) continue; // the odd last node of its level: moved up unchanged
    if (used + HASH_BYTES > pathBytes) return false;
    const sibling = PATH_AT + used;
    used += HASH_BYTES;
    // left || right: the node so far and its sibling, in tree order.
    PATH_WORK.set(NODE_OUTPUT, at & 1 ? 1 + HASH_BYTES : 1);
    PATH_WORK.copyWithin(at & 1 ? 1 : 1 + HASH_BYTES, sibling, sibling + HASH_BYTES);
    sodium.crypto_generichash(NODE_OUTPUT, NODE_INPUT);
  }
  if (!joined) {
    if (used !== pathBytes) return false;
    const signed = batchSigningBytes(publicKey, n, NODE_OUTPUT, network);
    const cacheKey = latin1(signature) + latin1(publicKey);
    const signedKey = signed.toString('latin1');
    if (cache?.get(cacheKey) !== signedKey) {
      if (!sodium.crypto_sign_verify_detached(signature, signed, publicKey)) return false;
      cache?.set(cacheKey, signedKey);
    }
  }
  // Checked out (joined, or to its signed root): the last path now, which the next message of the
  // batch joins lower.
  walk.record(i, n, pathBytes);
  walking = checkedPath;
  checkedPath = walk;
  return true;
}

/**
 * Scratch of {@link verifyBinaryChat}: a leaf's marker, the signed layout's prefix, kind and network
 * tag, then the frame's signed body. Grows to the largest body checked, up to 64 KiB (a larger one,
 * a text of many multi-byte characters, gets a buffer of its own).
 */
let signedWork = Buffer.alloc(2048);

/** 0x00 (for a leaf) || the chat signing bytes, with `body` (a binary chat frame's signed body) as their end. */
function signedInput(body: Uint8Array, network: Uint8Array): Uint8Array {
  const size = 1 + SIGNED_HEAD_BYTES + body.length;
  if (signedWork.length < size) {
    if (size > 64 * 1024) return signedInputIn(Buffer.allocUnsafe(size), body, network);
    signedWork = Buffer.alloc(Math.max(size, 2 * signedWork.length));
  }
  return bytesView(signedInputIn(signedWork, body, network), 0, size);
}

function signedInputIn(out: Buffer, body: Uint8Array, network: Uint8Array): Buffer {
  out[0] = 0; // a leaf's marker byte
  out.set(body, putSignedHead(out, 1, network));
  return out;
}

/**
 * {@link verifyChat} or {@link verifyChatInBatch} of a chat frame in the binary encoding
 * (`encodeChat`), over its own bytes: its first part is the signed layout after the prefix, kind
 * and network tag, and its key, signature and proof path are bytes, so nothing is re-encoded to
 * check it. False for a payload that is not one (see `binaryChatLayout`) and as they are.
 * @param knownLayout the payload's `binaryChatLayout`, when the caller has read it already (a node
 *   reads it to parse the frame): not read again. It must be what that function returns for `payload`.
 * @throws {RangeError} when `network` is not a 32-byte tag (this node's configuration).
 *
 * The caller still checks that the message's `from` equals `nodeIdOf` of its key.
 */
export function verifyBinaryChat(
  payload: Uint8Array,
  network: Uint8Array,
  cache?: BatchCache,
  knownLayout?: BinaryChatLayout,
): boolean {
  checkNetwork(network);
  const layout = knownLayout ?? binaryChatLayout(payload);
  if (layout === undefined) return false;
  const { bodyEnd, sigAt, n, i, pathAt, pathBytes } = layout;
  // Plain views, not Buffer#subarray (see bytesView): this runs for every message at every node.
  const input = signedInput(bytesView(payload, 1, bodyEnd), network);
  const publicKey = bytesView(payload, 1, 1 + PUBLIC_KEY_BYTES);
  const signature = bytesView(payload, sigAt, sigAt + SIGNATURE_BYTES);
  if (n === 0) return sodium.crypto_sign_verify_detached(signature, input.subarray(1), publicKey);
  if (i >= n || n > MAX_BATCH || pathBytes > MAX_PATH_BYTES) return false;
  sodium.crypto_generichash(NODE_OUTPUT, input);
  PATH_WORK.set(bytesView(payload, pathAt, pathAt + pathBytes), PATH_AT);
  return rootIsSigned(publicKey, i, n, pathBytes, signature, network, cache);
}
