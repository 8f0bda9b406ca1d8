import { Buffer } from 'node:buffer';
import { sodium } from './sodium.js';

/**
 * Random bytes and SHA-256, from libsodium (loaded for the handshake and signatures anyway).
 *
 * The node does not load node:crypto: loading it, and OpenSSL's Ed25519 keys behind it, cost an idle
 * node ~0.7-1.5 MB of memory (README, Performance), for a few calls that libsodium answers the same.
 */

/** `size` bytes from the operating system's random generator (libsodium's randombytes_buf). */
export function randomBytes(size: number): Buffer<ArrayBuffer> {
  const out = Buffer.alloc(size);
  sodium.randombytes_buf(out);
  return out;
}

/** A uniformly random integer in [0, 2^32). */
export function randomUint32(): number {
  return randomBytes(4).readUInt32LE(0);
}

/** SHA-256 of the concatenation of `parts` (a string counts as its UTF-8 bytes). */
export function sha256(...parts: readonly (Uint8Array | string)[]): Buffer {
  const [only] = parts;
  const input =
    parts.length === 1 && only instanceof Uint8Array
      ? only
      : Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part, 'utf8') : part)));
  const out = Buffer.alloc(sodium.crypto_hash_sha256_BYTES);
  sodium.crypto_hash_sha256(out, input);
  return out;
}
