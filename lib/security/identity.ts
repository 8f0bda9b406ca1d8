import { Buffer } from 'node:buffer';
import type { KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { randomBytes, sha256 } from './bytes.js';
import { SecurityError } from './errors.js';
import { ensurePrivateDir, readPrivateFile, writeFileOnce } from './key-file.js';
import { sodium } from './sodium.js';

/** Bytes of a raw Ed25519 public key. */
export const PUBLIC_KEY_BYTES = 32;
/** Bytes of an Ed25519 signature. */
export const SIGNATURE_BYTES = 64;
/**
 * Bytes of SHA-256(public key) kept in a node id: 16 bytes, 32 hex digits. 128 bits make finding a
 * key for a chosen id (a second preimage) cost 2^128 work; 8 bytes would be within reach of a
 * determined attacker (2^64).
 */
export const NODE_ID_BYTES = 16;
/** File name of the identity key inside the node's data directory. */
export const IDENTITY_FILE = 'identity.pem';

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it (RFC 8410). */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A node's long-term Ed25519 key pair, and the node id derived from it. */
export interface Identity {
  /** The node id: {@link nodeIdOf} the public key. */
  readonly id: string;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;
  /**
   * The private key as a node:crypto KeyObject, for programs that use node:crypto with it. Made when
   * first read (loading node:crypto then), also for an identity made from a KeyObject: the identity
   * itself signs with libsodium.
   */
  readonly privateKey: KeyObject;
  /** Ed25519 signature (64 bytes) of `data`. */
  sign(data: Buffer): Buffer;
}

/**
 * The node id of an Ed25519 public key: the first {@link NODE_ID_BYTES} bytes of its SHA-256, in
 * lowercase hex (32 characters, within the wire id pattern `[0-9a-zA-Z_-]{1,64}`).
 * @throws {RangeError} when `publicKey` is not 32 bytes.
 * @example nodeIdOf(identity.publicKey) // '3fa9c1d2...'
 */
export function nodeIdOf(publicKey: Uint8Array): string {
  if (publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new RangeError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, got ${publicKey.length}`);
  }
  return sha256(publicKey).subarray(0, NODE_ID_BYTES).toString('hex');
}

/**
 * The node:crypto KeyObject of a raw Ed25519 public key. node:crypto takes any bytes that decode
 * to a point, small-order ones included, and its `verify` with such a key accepts signatures made
 * without a private key: a key from a peer is checked with libsodium instead (`verifyChat`, the
 * handshake's identity proof).
 * @throws {RangeError} when `publicKey` is not 32 bytes.
 * @throws {Error} from node:crypto when the bytes are not a valid key encoding.
 */
export function publicKeyFromRaw(publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new RangeError(`an Ed25519 public key is ${PUBLIC_KEY_BYTES} bytes, got ${publicKey.length}`);
  }
  return nodeCrypto().createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]),
    format: 'der',
    type: 'spki',
  });
}

/**
 * DER of an Ed25519 private key in PKCS#8 (version 1, no attributes, no public key: RFC 8410), up to
 * the 32-byte seed that ends it. The form OpenSSL and node:crypto write, and this module too.
 */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
/** Bytes of an Ed25519 seed: the private key, from which libsodium derives the key pair. */
const SEED_BYTES = 32;

const require = createRequire(import.meta.url);
/**
 * node:crypto, loaded on first use: only a program's own KeyObjects and unusual key files need it
 * (loading it costs a node ~0.7-1.5 MB: README, Performance).
 */
function nodeCrypto(): typeof import('node:crypto') {
  return require('node:crypto') as typeof import('node:crypto');
}

/**
 * The identity of a 32-byte Ed25519 seed (the private key), zeroed afterwards when `wipe`. The key is
 * held in the process's memory (a buffer of its own, not Node's shared pool), as node:crypto's was.
 */
function identityFromSeed(seed: Uint8Array, wipe = false): Identity {
  const publicKey = Buffer.alloc(sodium.crypto_sign_PUBLICKEYBYTES);
  const secretKey = Buffer.alloc(sodium.crypto_sign_SECRETKEYBYTES);
  sodium.crypto_sign_seed_keypair(publicKey, secretKey, seed);
  if (wipe) sodium.sodium_memzero(seed);
  let keyObject: KeyObject | undefined;
  return {
    id: nodeIdOf(publicKey),
    publicKey,
    get privateKey(): KeyObject {
      keyObject ??= nodeCrypto().createPrivateKey({
        key: pkcs8OfSeed(secretKey.subarray(0, SEED_BYTES)),
        format: 'der',
        type: 'pkcs8',
      });
      return keyObject;
    },
    sign(data) {
      const signature = Buffer.alloc(sodium.crypto_sign_BYTES);
      sodium.crypto_sign_detached(signature, data, secretKey);
      return signature;
    },
  };
}

/** The seed of a PKCS#8 DER Ed25519 private key in the form {@link ED25519_PKCS8_PREFIX} describes. */
function seedOfPkcs8(der: Uint8Array): Buffer | undefined {
  if (der.length !== ED25519_PKCS8_PREFIX.length + SEED_BYTES) return undefined;
  const prefix = der.subarray(0, ED25519_PKCS8_PREFIX.length);
  if (!ED25519_PKCS8_PREFIX.equals(prefix)) return undefined;
  const seed = Buffer.alloc(SEED_BYTES); // its own memory, not the shared pool: zeroed after use
  seed.set(der.subarray(prefix.length));
  return seed;
}

/** The PKCS#8 DER of an Ed25519 seed (see {@link ED25519_PKCS8_PREFIX}). */
function pkcs8OfSeed(seed: Uint8Array): Buffer {
  return Buffer.concat([ED25519_PKCS8_PREFIX, seed]);
}

/** The PKCS#8 PEM of an Ed25519 seed: what `openssl genpkey -algorithm ed25519` writes. */
function pemOfSeed(seed: Uint8Array): string {
  const der = pkcs8OfSeed(seed).toString('base64');
  return `-----BEGIN PRIVATE KEY-----\n${der}\n-----END PRIVATE KEY-----\n`;
}

/**
 * An Ed25519 key file as OpenSSL writes one (LF or CRLF lines): the 48 bytes of DER are one line of
 * 64 base64 characters, without padding, and any such line is canonical base64. Anything else (a
 * layout OpenSSL reads too, or that it refuses) is left to node:crypto.
 */
const PKCS8_PEM = /^-----BEGIN PRIVATE KEY-----\r?\n([A-Za-z0-9+/]{64})\r?\n-----END PRIVATE KEY-----\s*$/;

/**
 * The identity of an Ed25519 private key held in a node:crypto KeyObject.
 * @throws {TypeError} when `privateKey` is not an Ed25519 private key.
 */
export function identityFromPrivateKey(privateKey: KeyObject): Identity {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new TypeError(
      `an identity needs an Ed25519 private key, got ${privateKey.type} ${privateKey.asymmetricKeyType}`,
    );
  }
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const seed = seedOfPkcs8(der);
  sodium.sodium_memzero(der);
  if (seed === undefined) throw new TypeError('node:crypto exported an Ed25519 key in an unknown form');
  return identityFromSeed(seed, true);
}

/** A new random identity, in memory only (tests, throwaway nodes). */
export function generateIdentity(): Identity {
  return identityFromSeed(randomBytes(SEED_BYTES), true);
}

/**
 * Parses an identity file: an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the
 * format `openssl genpkey -algorithm ed25519` writes. That form is read here; any other PEM (another
 * layout of an Ed25519 key, or a key of another kind, for the error) is handed to node:crypto.
 * @throws {SecurityError} `ERR_IDENTITY_FILE` when it is not one.
 */
export function parseIdentity(pem: string, source = 'identity file'): Identity {
  const body = PKCS8_PEM.exec(pem)?.[1];
  if (body !== undefined) {
    const der = Buffer.from(body, 'base64');
    const seed = seedOfPkcs8(der);
    sodium.sodium_memzero(der);
    if (seed !== undefined) return identityFromSeed(seed, true);
  }
  let key: KeyObject;
  try {
    key = nodeCrypto().createPrivateKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new SecurityError('ERR_IDENTITY_FILE', `${source} does not hold a private key in PEM`, {
      cause: err,
    });
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new SecurityError(
      'ERR_IDENTITY_FILE',
      `${source} holds a ${key.asymmetricKeyType ?? 'unknown'} key, not an Ed25519 one`,
    );
  }
  return identityFromPrivateKey(key);
}

/**
 * Loads the node's identity from `dir`/{@link IDENTITY_FILE}, creating it on first start.
 *
 * The directory is created with mode 0700 when missing; the key file is written atomically with
 * mode 0600 and never replaced (two processes starting at once end up with the same key). A key file
 * that others can read, or a directory others can write to, is refused rather than silently fixed:
 * the key may already have leaked.
 *
 * @throws {SecurityError} `ERR_IDENTITY_FILE` for an unreadable, malformed or exposed file.
 * @example const identity = loadOrCreateIdentity(dataDir); console.log(identity.id);
 */
export function loadOrCreateIdentity(dir: string): Identity {
  ensurePrivateDir(dir, 'ERR_IDENTITY_FILE');
  const path = join(dir, IDENTITY_FILE);
  const existing = readPrivateFile(path, 'ERR_IDENTITY_FILE');
  if (existing !== undefined) return parseIdentity(existing, path);
  const seed = randomBytes(SEED_BYTES);
  const created = writeFileOnce(path, pemOfSeed(seed));
  const identity = identityFromSeed(seed, true);
  if (created) return identity;
  // Lost a race with another process starting in the same directory: use the key it wrote.
  const theirs = readPrivateFile(path, 'ERR_IDENTITY_FILE');
  if (theirs === undefined)
    throw new SecurityError('ERR_IDENTITY_FILE', `${path} vanished while being created`);
  return parseIdentity(theirs, path);
}
