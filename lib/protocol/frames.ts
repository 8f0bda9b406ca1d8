import { Buffer, isUtf8 } from 'node:buffer';
import {
  getUint16,
  getUint32,
  putUint16,
  putUint32,
  putUint64,
  type SlicingBuffer,
  type WritingBuffer,
} from './codec.js';
import { ProtocolError } from './errors.js';
import type { Mutable } from '../util/mutable.js';

/**
 * Version of the wire protocol, sent in every hello. A node refuses a peer whose version differs.
 * Bump it for any change an older node would misread.
 */
export const PROTOCOL_VERSION = 1;

/** Longest nickname, in UTF-16 code units. Nicknames are display names only. */
export const MAX_NICK_LENGTH = 32;
/** Longest chat text, in UTF-16 code units (well under the frame limit even in 4-byte UTF-8). */
export const MAX_TEXT_LENGTH = 16 * 1024;
/** Most entries a peer list may carry; more is a protocol violation, not something to truncate. */
export const MAX_PEERS_PER_LIST = 64;

/** First frame on every connection, in both directions. */
export interface HelloFrame {
  readonly type: 'hello';
  /** Protocol version, {@link PROTOCOL_VERSION}. */
  readonly v: number;
  /** The sender's node id. */
  readonly id: string;
  readonly nick: string;
  /** The port the sender listens on; its host is taken from the socket. */
  readonly port: number;
  /** `host:port` the sender asks to be known by (from `--advertise`), instead of socket address + port. */
  readonly addr?: string;
  /**
   * The sender reads packs (several frames sealed as one message; `pack` in codec.ts) of up to this
   * many plaintext bytes. Without it (or 0), every frame is sealed alone for this sender.
   */
  readonly pack?: number;
  /**
   * The sender reads chat frames in the binary encoding ({@link encodeChat}). Without it, chat
   * frames are sent to this sender as JSON (a binary one is converted on its way out).
   */
  readonly binary?: boolean;
  /**
   * The sequence number of the sender's last message so far (0: none yet): the messages it sends
   * after this hello have greater ones. A receiver tells by it whether the nick of one of the
   * sender's messages is newer than this hello's, without comparing the sender's clock with its own.
   */
  readonly seq?: number;
  /**
   * The sender's clock when it sent this hello, ms since the epoch: of two hellos with one `seq` (no
   * message between them), the later one has the newer nick. Compared with the same sender's only.
   */
  readonly ts?: number;
}

/**
 * One chat message. Relays forward its bytes unchanged (a binary one as JSON to a peer that does not
 * read binary frames).
 */
export interface ChatFrame {
  readonly type: 'chat';
  /** Unique message id, the same on every node and every retry. */
  readonly id: string;
  /** Node id of the sender. */
  readonly from: string;
  readonly nick: string;
  /** Sender's clock, milliseconds since the epoch. */
  readonly ts: number;
  /** The sender's sequence number: 1, 2, 3, ... per sender, never reused (across restarts too). */
  readonly seq: number;
  readonly text: string;
  /** The sender's Ed25519 public key, 64 hex digits; `from` is derived from it. */
  readonly key: string;
  /**
   * Ed25519 signature, base64url, 86 characters: of the message (lib/security/sign.ts layout), or,
   * with `proof`, of the root of the batch the message was sent in.
   */
  readonly sig: string;
  /** For a message sent in a batch: where it is in the batch's hash tree (lib/security/sign.ts). */
  readonly proof?: ChatProof;
}

/** A message's place in the hash tree of its batch, whose root the sender signed once. */
export interface ChatProof {
  /** Index of the message in the batch, 0-based. */
  readonly i: number;
  /** Messages in the batch, 2..{@link MAX_BATCH}. */
  readonly n: number;
  /** The sibling hashes from the leaf up (32 bytes each), concatenated, base64url. */
  readonly path: string;
}

/** Most messages one batch signature covers. */
export const MAX_BATCH = 1024;

/** A node that one peer knows, as sent in a peer list. */
export interface PeerEntry {
  readonly id: string;
  /** `host:port` where the node listens, as `formatAddress` writes it. */
  readonly addr: string;
}

/** The peers the sender is connected to. */
export interface PeersFrame {
  readonly type: 'peers';
  readonly peers: readonly PeerEntry[];
}

/** Liveness probe; answered by a pong with the same nonce. */
export interface PingFrame {
  readonly type: 'ping';
  readonly n: number;
}

export interface PongFrame {
  readonly type: 'pong';
  readonly n: number;
}

/**
 * The sender is about to close this connection, and why: `shutdown` (the node is stopping), `full`
 * (it has --max-peers peers), `duplicate` (another connection between the same two nodes is kept; the
 * receiver closes this one once it has that other connection).
 */
export interface ByeFrame {
  readonly type: 'bye';
  readonly reason: string;
}

/** One sender and the highest sequence number the node holds of it without a gap. */
export interface SyncMark {
  readonly from: string;
  readonly seq: number;
  /**
   * Ranges `[first, last]` above `seq` that the node holds already (after a gap), ascending, at most
   * {@link MAX_SYNC_RANGES}: the receiver leaves them out of its answer.
   */
  readonly have?: readonly (readonly [number, number])[];
}

/**
 * What the sender holds, per sender: sent when a connection comes up, and again a little after new
 * messages arrived (anti-entropy: what a lost frame or a stale peer list left out is fetched). The
 * receiver answers with the messages of its history window above each mark (all of a sender not
 * listed), as ordinary chat frames.
 */
export interface SyncFrame {
  readonly type: 'sync';
  readonly marks: readonly SyncMark[];
  /**
   * Only messages the receiver has held for at least this many milliseconds (0..60,000): younger ones
   * are likely still on their way. Absent: all of them.
   */
  readonly minAgeMs?: number;
  /**
   * Encrypted frames the sender had read on this connection when it wrote the sync. The receiver's
   * frames after that many were still on their way, so it does not send those messages again.
   * Absent: the receiver cannot tell what is in flight.
   */
  readonly rx?: number;
  /**
   * The sender is still taking in new messages (a burst goes on): the receiver sends what fills the
   * gaps, below the highest message held of each sender (the last of `have`, else the mark), and of
   * what lies above only what it took in a while ago (five anti-entropy periods): the rest is likely
   * still on its way; a sync once the talk pauses asks for it.
   */
  readonly busy?: boolean;
  /**
   * At most this many messages, the oldest first: what the sender can take in now (a node that
   * dropped messages over their sender's rate asks for what its rate limit lets in). Absent: all.
   */
  readonly max?: number;
  /**
   * Only messages stamped at or after this time (ms since the epoch): the oldest the sender's history
   * window takes in. Absent: any age.
   */
  readonly since?: number;
}

/** Most marks in one sync frame; a node that knows more senders lists the most recent ones. */
export const MAX_SYNC_MARKS = 2048;
/** Largest `minAgeMs` a sync may carry (a minute). */
export const MAX_SYNC_MIN_AGE_MS = 60_000;
/** Most `have` ranges of one sync mark. */
export const MAX_SYNC_RANGES = 16;

export type Frame = HelloFrame | ChatFrame | PeersFrame | PingFrame | PongFrame | ByeFrame | SyncFrame;
export type FrameType = Frame['type'];

/** Frame types of protocol version 1. Append-only. */
export const FRAME_TYPES: readonly FrameType[] = ['hello', 'chat', 'peers', 'ping', 'pong', 'bye', 'sync'];

const ID_PATTERN = /^[0-9a-zA-Z_-]{1,64}$/;

type Json = Record<string, unknown>;

function bad(message: string): never {
  throw new ProtocolError('ERR_BAD_FRAME', message);
}

function str(o: Json, key: string, max: number, pattern?: RegExp): string {
  const value = o[key];
  if (typeof value !== 'string') bad(`${key} must be a string`);
  if (value.length > max) bad(`${key} is longer than ${max}`);
  if (pattern !== undefined && !pattern.test(value)) bad(`${key} is malformed`);
  return value;
}

function int(o: Json, key: string, min: number, max: number): number {
  const value = o[key];
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    bad(`${key} must be an integer in ${min}..${max}`);
  }
  return value;
}

function bool(o: Json, key: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') bad(`${key} must be a boolean`);
  return v;
}

/** A chat frame's `proof`: a place in a batch of 2..MAX_BATCH and at most one hash per tree level. */
function proofOf(value: unknown): ChatProof {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad('proof must be an object');
  const o = value as Json;
  const n = int(o, 'n', 2, MAX_BATCH);
  const i = int(o, 'i', 0, n - 1);
  // 32-byte hashes, one per level at most: 10 levels for 1,024 messages.
  const path = str(o, 'path', 427, /^[0-9A-Za-z_-]*$/);
  return { i, n, path };
}

/** A sync mark's `have`: ascending, disjoint ranges above `mark`. */
function ranges(value: unknown, mark: number): [number, number][] {
  if (!Array.isArray(value)) bad('have must be an array');
  if (value.length > MAX_SYNC_RANGES) bad(`have of ${value.length} ranges, the limit is ${MAX_SYNC_RANGES}`);
  let above = mark;
  return value.map((range: unknown): [number, number] => {
    const [first, last] = Array.isArray(range) && range.length === 2 ? (range as unknown[]) : [];
    if (
      typeof first !== 'number' ||
      typeof last !== 'number' ||
      !Number.isSafeInteger(first) ||
      !Number.isSafeInteger(last) ||
      first <= above ||
      last < first
    )
      bad('have must hold ascending [first, last] ranges above the mark');
    above = last;
    return [first, last];
  });
}

/**
 * Parses one frame payload into a validated {@link Frame}: UTF-8 JSON, or a chat frame in the binary
 * encoding ({@link encodeChat}, first byte {@link BINARY_CHAT}).
 * @param id the payload's {@link chatIdOf}, when the caller has read it already (a node does, to drop
 *   copies of messages it holds before parsing them): a binary chat frame takes it as its id instead
 *   of reading it again. Undefined: read here, and a malformed one refused.
 * @param layout the payload's {@link binaryChatLayout}, when the caller has read it already (a node
 *   does, to hand it on to the signature check too): a binary chat frame is read with it instead of
 *   reading it again. Undefined: read here. Either must be what those functions return for `payload`.
 */
export function parseFrame(payload: Buffer, id?: string, layout?: BinaryChatLayout): Frame {
  if (isBinaryChat(payload)) return decodeChat(payload, id, layout);
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new ProtocolError('ERR_BAD_JSON', 'frame is not valid JSON');
  }
  return validateFrame(raw);
}

/**
 * Checks that a decoded JSON value is a well-formed frame and returns it typed. Unknown extra fields
 * are dropped (newer senders may add fields within one protocol version).
 * @throws {ProtocolError} `ERR_BAD_FRAME` or `ERR_UNKNOWN_TYPE`.
 */
export function validateFrame(raw: unknown): Frame {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('frame must be a JSON object');
  const o = raw as Json;
  const type = o['type'];
  switch (type) {
    case 'hello': {
      const v = int(o, 'v', 0, 0xffff);
      if (v !== PROTOCOL_VERSION) {
        throw new ProtocolError(
          'ERR_PROTOCOL_VERSION',
          `protocol version ${v}, this node speaks ${PROTOCOL_VERSION}`,
        );
      }
      const hello: Mutable<HelloFrame> = {
        type,
        v,
        id: str(o, 'id', 64, ID_PATTERN),
        nick: str(o, 'nick', MAX_NICK_LENGTH),
        port: int(o, 'port', 1, 65535),
      };
      if (o['addr'] !== undefined) hello.addr = str(o, 'addr', 300);
      if (o['pack'] !== undefined) hello.pack = int(o, 'pack', 0, 0xffff_ffff);
      if (o['binary'] !== undefined) hello.binary = bool(o, 'binary');
      if (o['seq'] !== undefined) hello.seq = int(o, 'seq', 0, Number.MAX_SAFE_INTEGER);
      if (o['ts'] !== undefined) hello.ts = int(o, 'ts', 0, Number.MAX_SAFE_INTEGER);
      return hello;
    }
    case 'chat': {
      const chat: Mutable<ChatFrame> = {
        type,
        id: str(o, 'id', 64, ID_PATTERN),
        from: str(o, 'from', 64, ID_PATTERN),
        nick: str(o, 'nick', MAX_NICK_LENGTH),
        ts: int(o, 'ts', 0, Number.MAX_SAFE_INTEGER),
        seq: int(o, 'seq', 1, Number.MAX_SAFE_INTEGER),
        text: str(o, 'text', MAX_TEXT_LENGTH),
        key: str(o, 'key', 64, /^[0-9a-f]{64}$/),
        sig: str(o, 'sig', 86, /^[0-9A-Za-z_-]{86}$/),
      };
      // Set, not spread: no copy of the frame per message.
      if (o['proof'] !== undefined) chat.proof = proofOf(o['proof']);
      return chat;
    }
    case 'peers': {
      const list = o['peers'];
      if (!Array.isArray(list)) bad('peers must be an array');
      if (list.length > MAX_PEERS_PER_LIST)
        bad(`peer list of ${list.length} entries, the limit is ${MAX_PEERS_PER_LIST}`);
      const peers = list.map((entry: unknown): PeerEntry => {
        if (typeof entry !== 'object' || entry === null) bad('peer entry must be an object');
        const e = entry as Json;
        return { id: str(e, 'id', 64, ID_PATTERN), addr: str(e, 'addr', 300) };
      });
      return { type, peers };
    }
    case 'ping':
    case 'pong':
      return { type, n: int(o, 'n', 0, 0xffff_ffff) };
    case 'bye':
      return { type, reason: str(o, 'reason', 64) };
    case 'sync': {
      const list = o['marks'];
      if (!Array.isArray(list)) bad('marks must be an array');
      if (list.length > MAX_SYNC_MARKS) bad(`sync of ${list.length} marks, the limit is ${MAX_SYNC_MARKS}`);
      const marks = list.map((entry: unknown): SyncMark => {
        if (typeof entry !== 'object' || entry === null) bad('sync mark must be an object');
        const e = entry as Json;
        const mark = { from: str(e, 'from', 64, ID_PATTERN), seq: int(e, 'seq', 0, Number.MAX_SAFE_INTEGER) };
        return e['have'] === undefined ? mark : { ...mark, have: ranges(e['have'], mark.seq) };
      });
      return {
        type,
        marks,
        ...(o['minAgeMs'] === undefined ? {} : { minAgeMs: int(o, 'minAgeMs', 0, MAX_SYNC_MIN_AGE_MS) }),
        ...(o['rx'] === undefined ? {} : { rx: int(o, 'rx', 0, Number.MAX_SAFE_INTEGER) }),
        ...(o['busy'] === undefined ? {} : { busy: bool(o, 'busy') }),
        ...(o['max'] === undefined ? {} : { max: int(o, 'max', 1, Number.MAX_SAFE_INTEGER) }),
        ...(o['since'] === undefined ? {} : { since: int(o, 'since', 0, Number.MAX_SAFE_INTEGER) }),
      };
    }
    default:
      if (typeof type !== 'string') bad('frame type must be a string');
      throw new ProtocolError('ERR_UNKNOWN_TYPE', `unknown frame type ${JSON.stringify(type.slice(0, 32))}`);
  }
}

const CHAT_PREFIX = Buffer.from('{"type":"chat","id":"');
const QUOTE = 0x22;

/**
 * The id of a chat frame read straight from its payload bytes, without parsing it: the cheap
 * duplicate check a node does on every copy of a message it already holds. Works on binary chat
 * frames and on JSON ones laid out as {@link serializeFrame} lays them out (type first, then id),
 * which is how every node sends and relays them; `undefined` for any other payload (then the caller
 * parses it as usual).
 *
 * Nothing else of the payload is checked: a node only uses the id to drop copies of messages it
 * holds, so a payload that lies about its id can at worst be dropped, as a peer could drop it anyway.
 */
export function chatIdOf(payload: Buffer): string | undefined {
  if (isBinaryChat(payload)) {
    if (payload.length < ID_AT + 2) return undefined;
    const length = getUint16(payload, ID_AT);
    // Over 64 bytes is no id: not made into a string.
    if (length > 64 || ID_AT + 2 + length > payload.length) return undefined;
    const id = (payload as SlicingBuffer).latin1Slice(ID_AT + 2, ID_AT + 2 + length);
    return ID_PATTERN.test(id) ? id : undefined;
  }
  // Byte by byte, not Buffer#compare and #indexOf: their argument checks allocate on every call
  // (this runs for every frame received, mostly before V8 optimises it).
  const start = CHAT_PREFIX.length;
  if (payload.length <= start) return undefined;
  for (let i = 0; i < start; i++) if (payload[i] !== CHAT_PREFIX[i]) return undefined;
  // The closing quote, within 64 bytes of the id's start.
  const limit = Math.min(payload.length, start + 65);
  let end = start;
  while (end < limit && payload[end] !== QUOTE) end++;
  if (end === limit) return undefined;
  const id = (payload as SlicingBuffer).latin1Slice(start, end);
  return ID_PATTERN.test(id) ? id : undefined;
}

/** Serialises a frame to its payload (without the length prefix). */
export function serializeFrame(frame: Frame): Buffer {
  return Buffer.from(JSON.stringify(frame), 'utf8');
}

// ---- chat frames in the binary encoding ----------------------------------------------------------
//
// A chat frame's JSON is about 700 bytes for a 100-byte line sent in a batch (the key in hex, the
// signature and proof in base64url), and every node parses it, validates it and turns those fields
// back into bytes to check the signature. The binary encoding carries them as bytes, and its first
// part is the signed layout itself (lib/security/sign.ts), so a node checks the signature over the
// bytes it received. Sent to peers whose hello says `binary`; the rest get JSON.
//
//   u8   0x01                                   (a JSON frame starts with "{", a pack with 0x00)
//   32   key: the sender's Ed25519 public key     -- signed body: chatSigningBytes after its
//   u64  seq                                        prefix, kind and network tag
//   u64  ts
//   u16  id length, id (UTF-8)
//   u16  nick length, nick (UTF-8)
//   u32  text length, text (UTF-8)               -- end of signed body
//   u8   from length, from (ASCII)
//   64   sig
//   u16  proof n: 0 without a proof, else 2..1024, then u16 i and u8 k, k path hashes of 32 bytes
//
// Integers are big-endian. A frame with anything after its last field, or short of it, is refused.

/** First byte of a chat frame in the binary encoding. */
export const BINARY_CHAT = 0x01;
/** Bytes of a sender key, and of a signature, in a binary chat frame. */
const KEY_BYTES = 32;
const SIG_BYTES = 64;
/** Bytes of one hash of a chat proof's path (a SHA-256), in a binary chat frame. */
export const PATH_HASH_BYTES = 32;
/** Most path hashes: ten levels for a batch of {@link MAX_BATCH}. */
const MAX_PATH_HASHES = 10;
/** Offset of the id's length: after the marker, key, seq and ts. */
const ID_AT = 1 + KEY_BYTES + 16;

/**
 * Bytes of a chat frame in the binary encoding (see above) whose id, nick and text take these many
 * bytes of UTF-8 and whose `from` this many characters, with a proof path of `pathBytes` (undefined:
 * no proof). A node checks with it that a message it is asked to send fits its frame limit before it
 * signs one.
 */
export function binaryChatBytes(
  id: number,
  nick: number,
  text: number,
  from: number,
  pathBytes: number | undefined,
): number {
  const proof = pathBytes === undefined ? 0 : 3 + pathBytes;
  return 1 + KEY_BYTES + 16 + 2 + id + 2 + nick + 4 + text + 1 + from + SIG_BYTES + 2 + proof;
}

/** True when `payload` is a chat frame in the binary encoding (by its first byte). */
export function isBinaryChat(payload: Uint8Array): boolean {
  return payload.length > 0 && payload[0] === BINARY_CHAT;
}

/**
 * A chat frame in the binary encoding (see above): the same fields as its JSON, as bytes where they
 * are bytes (key, signature, proof path). `frame` is a valid frame (as {@link validateFrame}
 * returns, or as the signer makes it).
 * @throws {RangeError} for a field the encoding cannot carry: a nick or text with a lone surrogate
 *   (a signed message has none), a path that is not whole hashes, a key or signature that is not
 *   what {@link validateFrame} accepts.
 */
export function encodeChat(frame: ChatFrame): Buffer {
  // UTF-8 cannot carry a lone surrogate (it would arrive as U+FFFD): no signature covers one anyway.
  if (!frame.nick.isWellFormed() || !frame.text.isWellFormed()) {
    throw new RangeError('encodeChat: a nick or text with a lone surrogate');
  }
  const id = Buffer.byteLength(frame.id, 'utf8');
  const nick = Buffer.byteLength(frame.nick, 'utf8');
  const text = Buffer.byteLength(frame.text, 'utf8');
  const from = frame.from.length;
  const proof = frame.proof;
  // What the length fields and integers hold (a valid frame is well inside): nothing wraps. The
  // tail (from, proof) is checked where it is written.
  if (id > 0xffff || nick > 0xffff) throw new RangeError('encodeChat: an id or nick too long to carry');
  for (const value of [frame.seq, frame.ts]) {
    if (!Number.isSafeInteger(value) || value < 0)
      throw new RangeError(`encodeChat: ${value} is not a safe non-negative integer`);
  }
  const pathBytes = proof === undefined ? 0 : Math.floor((proof.path.length * 3) / 4);
  const size = binaryChatBytes(id, nick, text, from, proof === undefined ? undefined : pathBytes);
  const out = Buffer.allocUnsafe(size);
  out[0] = BINARY_CHAT;
  let at = putChatBody(out, 1, frame.key, frame);
  at = putChatTail(out, at, frame.from, frame.sig, proof, pathBytes);
  if (at !== size) throw new RangeError(`encodeChat: wrote ${at} of ${size} bytes`); // a field that was not valid
  return out;
}

/**
 * Writes a chat's signed body at `at`: key, seq, ts, then id, nick and text each after its length
 * (u16, u16, u32) in UTF-8. The layout the chat signing bytes end with (lib/security/sign.ts) and a
 * binary chat frame starts with. `out` has room for exactly what is written (the caller sized it);
 * each length is written after its string. Returns the offset after the body.
 * @throws {RangeError} for a key given in hex that is not 32 bytes of it.
 */
export function putChatBody(
  out: Buffer,
  at: number,
  key: Uint8Array | string,
  fields: {
    readonly seq?: number;
    readonly ts: number;
    readonly id: string;
    readonly nick: string;
    readonly text: string;
  },
): number {
  if (typeof key !== 'string') out.set(key, at);
  else if (out.write(key, at, KEY_BYTES, 'hex') !== KEY_BYTES)
    throw new RangeError('a chat key is 32 bytes of hex');
  at += KEY_BYTES;
  putUint64(out, at, fields.seq ?? 0);
  putUint64(out, at + 8, fields.ts);
  at += 16;
  // utf8Write, not write(): Buffer#write walks its argument checks and encoding switch in
  // JavaScript, three times per message the node sends (mostly before V8 optimises it).
  const writing = out as WritingBuffer;
  let length = writing.utf8Write(fields.id, at + 2);
  putUint16(out, at, length);
  at += 2 + length;
  length = writing.utf8Write(fields.nick, at + 2);
  putUint16(out, at, length);
  at += 2 + length;
  length = writing.utf8Write(fields.text, at + 4);
  putUint32(out, at, length);
  return at + 4 + length;
}

/**
 * Writes what follows the signed body of a binary chat frame at `at` (from, sig, proof), the
 * signature and path as bytes or in base64url (`pathBytes` of it); returns the offset after it.
 * @throws {RangeError} for what the encoding cannot carry: a `from` that is not an id, a signature
 *   that is not 64 bytes, a proof out of shape or a path that is not whole hashes (at most ten).
 */
function putChatTail(
  out: Buffer,
  at: number,
  from: string,
  sig: Uint8Array | string,
  proof: { readonly i: number; readonly n: number; readonly path: Uint8Array | string } | undefined,
  pathBytes: number,
): number {
  if (!ID_PATTERN.test(from)) throw new RangeError("a chat frame's from is not an id");
  if (
    proof !== undefined &&
    (!Number.isInteger(proof.n) ||
      !Number.isInteger(proof.i) ||
      proof.n > MAX_BATCH ||
      proof.i < 0 ||
      proof.i >= proof.n ||
      pathBytes % PATH_HASH_BYTES !== 0 ||
      pathBytes > MAX_PATH_HASHES * PATH_HASH_BYTES)
  ) {
    throw new RangeError(`a chat proof out of shape: ${proof.i} of ${proof.n}, ${pathBytes} bytes of path`);
  }
  out[at] = from.length;
  at += 1 + (out as WritingBuffer).latin1Write(from, at + 1);
  if (
    typeof sig === 'string'
      ? out.write(sig, at, SIG_BYTES, 'base64url') !== SIG_BYTES
      : sig.length !== SIG_BYTES
  )
    throw new RangeError('a chat signature is 64 bytes');
  if (typeof sig !== 'string') out.set(sig, at);
  at += SIG_BYTES;
  putUint16(out, at, proof?.n ?? 0);
  if (proof === undefined) return at + 2;
  putUint16(out, at + 2, proof.i);
  out[at + 4] = pathBytes / PATH_HASH_BYTES;
  if (typeof proof.path === 'string') out.write(proof.path, at + 5, pathBytes, 'base64url');
  else out.set(proof.path.subarray(0, pathBytes), at + 5);
  return at + 5 + pathBytes;
}

/**
 * The binary chat frame of a message whose signed bytes are laid out already (the signer's): `body`
 * is what {@link encodeChat} writes after the marker (the chat signing bytes after their prefix, kind
 * and network tag), then `from`, the signature and the proof with its path as bytes. One copy of the
 * body instead of laying the fields out again.
 * @throws {RangeError} for a signature that is not 64 bytes, a `from` that is not an id, or a proof
 *   out of shape (as {@link encodeChat}).
 */
export function chatPayload(
  body: Uint8Array,
  from: string,
  sig: Uint8Array,
  proof?: { readonly i: number; readonly n: number; readonly path: Uint8Array },
): Buffer {
  const pathBytes = proof?.path.length ?? 0;
  const size = 1 + body.length + 1 + from.length + SIG_BYTES + 2 + (proof ? 3 + pathBytes : 0);
  const out = Buffer.allocUnsafe(size);
  out[0] = BINARY_CHAT;
  out.set(body, 1);
  putChatTail(out, 1 + body.length, from, sig, proof, pathBytes);
  return out;
}

/** Where the parts of a binary chat frame lie, for its parse and its signature check ({@link binaryChatLayout}). */
export interface BinaryChatLayout {
  /** Offsets of the nick's and the text's length prefixes (the id's is at a fixed place). */
  readonly nickAt: number;
  readonly textAt: number;
  /** End of the signed body (it starts at 1, with the key). */
  readonly bodyEnd: number;
  /** Offset of the 64-byte signature. */
  readonly sigAt: number;
  /** The proof's batch size, 0 without one. */
  readonly n: number;
  readonly i: number;
  /** Offset and length of the proof path (whole 32-byte hashes). */
  readonly pathAt: number;
  readonly pathBytes: number;
}

/**
 * Reads where the parts of a binary chat frame lie, checking only that they fit (the structure, not
 * the fields: {@link parseFrame} checks those). `undefined` for a payload that does not hold them.
 */
export function binaryChatLayout(payload: Uint8Array): BinaryChatLayout | undefined {
  const size = payload.length;
  let at = ID_AT;
  if (payload[0] !== BINARY_CHAT || size < at + 2) return undefined;
  at += 2 + getUint16(payload, at); // id
  const nickAt = at;
  if (at + 2 > size) return undefined;
  at += 2 + getUint16(payload, at); // nick
  const textAt = at;
  if (at + 4 > size) return undefined;
  at += 4 + getUint32(payload, at); // text
  const bodyEnd = at;
  if (at + 1 > size) return undefined;
  at += 1 + payload[at]!; // from
  const sigAt = at;
  at += SIG_BYTES;
  if (at + 2 > size) return undefined;
  const n = getUint16(payload, at);
  at += 2;
  if (n === 0) {
    return at === size ? { nickAt, textAt, bodyEnd, sigAt, n, i: 0, pathAt: at, pathBytes: 0 } : undefined;
  }
  if (at + 3 > size) return undefined;
  const i = getUint16(payload, at);
  const pathBytes = payload[at + 2]! * PATH_HASH_BYTES;
  at += 3;
  return at + pathBytes === size
    ? { nickAt, textAt, bodyEnd, sigAt, n, i, pathAt: at, pathBytes }
    : undefined;
}

/** A u64 at `at` as a safe integer; `undefined` above 2^53 - 1. */
function getUint64(bytes: Uint8Array, at: number): number | undefined {
  const high = getUint32(bytes, at);
  if (high > 0x1f_ffff) return undefined;
  return high * 0x1_0000_0000 + getUint32(bytes, at + 4);
}

/**
 * UTF-8 text at `start..end`, refused when not valid UTF-8 (it would not be the signed bytes). The
 * decoder turns every invalid sequence into U+FFFD, so text without one is valid as it is; only
 * text with one (sent, or made by the decoder) is checked byte by byte: for most messages one
 * `indexOf` instead of a view and a call into `isUtf8`.
 */
function utf8(payload: Buffer, start: number, end: number, name: string): string {
  const text = (payload as SlicingBuffer).utf8Slice(start, end);
  if (text.indexOf('\uFFFD') !== -1 && !isUtf8(payload.subarray(start, end)))
    bad(`${name} is not valid UTF-8`);
  return text;
}

/**
 * A binary chat frame as a validated {@link ChatFrame}, with the checks {@link validateFrame} makes of
 * JSON; `knownId` and `knownLayout` are its {@link chatIdOf} and {@link binaryChatLayout} when the
 * caller has them (see {@link parseFrame}).
 */
function decodeChat(
  payload: Buffer,
  knownId: string | undefined,
  knownLayout: BinaryChatLayout | undefined,
): ChatFrame {
  const layout = knownLayout ?? binaryChatLayout(payload);
  if (layout === undefined) bad('binary chat frame of the wrong length');
  const seq = getUint64(payload, 1 + KEY_BYTES);
  const ts = getUint64(payload, 1 + KEY_BYTES + 8);
  if (seq === undefined || seq < 1) bad(`seq must be an integer in 1..${Number.MAX_SAFE_INTEGER}`);
  if (ts === undefined) bad(`ts must be an integer in 0..${Number.MAX_SAFE_INTEGER}`);
  const id = knownId ?? chatIdOf(payload) ?? bad('id is malformed');
  const nick = utf8(payload, layout.nickAt + 2, layout.textAt, 'nick');
  if (nick.length > MAX_NICK_LENGTH) bad(`nick is longer than ${MAX_NICK_LENGTH}`);
  const text = utf8(payload, layout.textAt + 4, layout.bodyEnd, 'text');
  if (text.length > MAX_TEXT_LENGTH) bad(`text is longer than ${MAX_TEXT_LENGTH}`);
  const bytes = payload as SlicingBuffer;
  const from = bytes.latin1Slice(layout.bodyEnd + 1, layout.sigAt);
  if (!ID_PATTERN.test(from)) bad('from is malformed');
  const chat: Mutable<ChatFrame> = {
    type: 'chat',
    id,
    from,
    nick,
    ts,
    seq,
    text,
    key: bytes.hexSlice(1, 1 + KEY_BYTES),
    sig: bytes.base64urlSlice(layout.sigAt, layout.sigAt + SIG_BYTES),
  };
  if (layout.n !== 0) {
    if (layout.n < 2 || layout.n > MAX_BATCH) bad(`proof n must be an integer in 2..${MAX_BATCH}`);
    if (layout.i >= layout.n) bad(`proof i must be an integer in 0..${layout.n - 1}`);
    if (layout.pathBytes > MAX_PATH_HASHES * PATH_HASH_BYTES) bad('proof path is longer than ten hashes');
    chat.proof = {
      i: layout.i,
      n: layout.n,
      path: bytes.base64urlSlice(layout.pathAt, layout.pathAt + layout.pathBytes),
    };
  }
  return chat;
}
