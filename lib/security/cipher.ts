import { Buffer } from 'node:buffer';
import { sodium } from './sodium.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../protocol/codec.js';
import { SecurityError } from './errors.js';

/** Bytes of the Poly1305 tag after every ciphertext. */
export const TAG_BYTES = 16;
/** Bytes of a transport key. */
export const KEY_BYTES = 32;

/**
 * Default largest plaintext of one transport message: what fits, with its tag, in the largest frame
 * ({@link DEFAULT_MAX_FRAME_BYTES}), so one frame carries one encrypted message.
 */
export const DEFAULT_MAX_MESSAGE_BYTES = DEFAULT_MAX_FRAME_BYTES - TAG_BYTES;

/**
 * Messages one key may protect before the session must be replaced. Noise allows 2^64 - 1; JavaScript
 * counts exactly up to 2^53 - 1, which no connection reaches (a million messages a second for 285
 * years).
 */
const MAX_NONCE = Number.MAX_SAFE_INTEGER;

/**
 * Checks a largest-message option.
 * @throws {RangeError} unless it is an integer in 0..2^32 - 17 (its ciphertext must fit a 32-bit length).
 */
export function checkMaxMessageBytes(maxMessageBytes: number): void {
  if (
    !Number.isInteger(maxMessageBytes) ||
    maxMessageBytes < 0 ||
    maxMessageBytes > 0xffff_ffff - TAG_BYTES
  ) {
    throw new RangeError(`maxMessageBytes must be an integer in 0..2^32-17, got ${maxMessageBytes}`);
  }
}

/**
 * One direction of a Noise transport: ChaCha20-Poly1305 (IETF, libsodium) under one key, with the
 * Noise nonce (4 zero bytes, then a 64-bit little-endian counter) and empty associated data, so the
 * bytes are those of a Noise CipherState. One difference: a message may be larger than Noise's 65,535
 * bytes (up to `maxMessageBytes`), since our frames carry their own 4-byte length.
 *
 * Messages must be decrypted in the order they were encrypted: the counter is implicit, which is what
 * makes a replayed, dropped or reordered message fail.
 */
export class CipherState {
  private readonly key: Buffer;
  private nonce = 0;
  private broken = false;
  private readonly nonceBytes = Buffer.alloc(12);
  private readonly nonceView = new DataView(this.nonceBytes.buffer, this.nonceBytes.byteOffset, 12);

  /** @throws {RangeError} for a key that is not 32 bytes or a bad `maxMessageBytes`. */
  constructor(
    key: Uint8Array,
    readonly maxMessageBytes: number = DEFAULT_MAX_MESSAGE_BYTES,
  ) {
    if (key.length !== KEY_BYTES)
      throw new RangeError(`a transport key is ${KEY_BYTES} bytes, got ${key.length}`);
    checkMaxMessageBytes(maxMessageBytes);
    this.key = Buffer.from(key); // a copy: the handshake library wipes its own buffers
  }

  /** Messages processed so far (the next nonce). */
  get count(): number {
    return this.nonce;
  }

  private nextNonce(): Buffer {
    if (this.nonce >= MAX_NONCE) {
      throw new SecurityError('ERR_NONCE_EXHAUSTED', 'this session has used all its nonces; reconnect');
    }
    this.nonceView.setUint32(4, this.nonce % 0x1_0000_0000, true);
    this.nonceView.setUint32(8, Math.floor(this.nonce / 0x1_0000_0000), true);
    this.nonce += 1;
    return this.nonceBytes;
  }

  /**
   * Encrypts one message: its ciphertext followed by the 16-byte tag.
   * @throws {RangeError} when `plaintext` is larger than `maxMessageBytes` (a bug of the sender).
   * @throws {SecurityError} `ERR_NONCE_EXHAUSTED` after 2^53 - 1 messages.
   */
  encrypt(plaintext: Uint8Array): Buffer {
    // Not zero-filled: the cipher writes every byte.
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
    this.encryptInto(out, plaintext);
    return out;
  }

  /**
   * Encrypts one message into `out`, which must be exactly `plaintext.length + 16` bytes: for a
   * writer that puts it straight into the bytes it sends (no buffer of its own per message).
   * @throws {RangeError} as {@link encrypt}, and for an `out` of another size (a bug of the caller).
   * @throws {SecurityError} as {@link encrypt}.
   */
  encryptInto(out: Uint8Array, plaintext: Uint8Array): void {
    if (plaintext.length > this.maxMessageBytes) {
      throw new RangeError(`message of ${plaintext.length} bytes, the limit is ${this.maxMessageBytes}`);
    }
    if (out.length !== plaintext.length + TAG_BYTES) {
      throw new RangeError(`encryptInto: ${out.length} bytes of room for ${plaintext.length + TAG_BYTES}`);
    }
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(out, plaintext, null, null, this.nextNonce(), this.key);
  }

  /**
   * Decrypts the next message. After a failure every later call fails too: the stream is no longer
   * trustworthy and the connection must be closed.
   * @throws {SecurityError} `ERR_DECRYPT` for a tampered, truncated, oversized, replayed or reordered
   *   message; `ERR_NONCE_EXHAUSTED` after 2^53 - 1 messages.
   */
  decrypt(ciphertext: Uint8Array): Buffer {
    // Not zero-filled: written in full on success, dropped on failure.
    const out = Buffer.allocUnsafe(Math.max(0, ciphertext.length - TAG_BYTES));
    this.open(out, ciphertext);
    return out;
  }

  /**
   * Decrypts the next message where it lies: the plaintext overwrites the start of `ciphertext`, and
   * is returned as a view of it (its first `length - 16` bytes). For a frame nothing else reads: no
   * buffer of its own per message. Fails as {@link decrypt} (the bytes are then garbage).
   */
  decryptInPlace(ciphertext: Buffer): Buffer {
    const out = ciphertext.subarray(0, Math.max(0, ciphertext.length - TAG_BYTES));
    this.open(out, ciphertext);
    return out;
  }

  /** Decrypts `ciphertext` into `out` (its length less the tag; it may be the same memory). */
  private open(out: Uint8Array, ciphertext: Uint8Array): void {
    if (this.broken) throw new SecurityError('ERR_DECRYPT', 'an earlier message failed to decrypt');
    if (ciphertext.length < TAG_BYTES || ciphertext.length > this.maxMessageBytes + TAG_BYTES) {
      this.broken = true;
      throw new SecurityError(
        'ERR_DECRYPT',
        `encrypted message of ${ciphertext.length} bytes, expected ${TAG_BYTES}..${this.maxMessageBytes + TAG_BYTES}`,
      );
    }
    try {
      sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
        out,
        null,
        ciphertext,
        null,
        this.nextNonce(),
        this.key,
      );
    } catch (err) {
      this.broken = true;
      if (err instanceof TypeError || err instanceof RangeError || err instanceof SecurityError) throw err;
      throw new SecurityError(
        'ERR_DECRYPT',
        'message failed authentication (tampered, replayed or reordered)',
        {
          cause: err,
        },
      );
    }
  }
}
