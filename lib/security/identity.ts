import { Buffer } from 'node:buffer';
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign as cryptoSign,
  type KeyObject,
} from 'node:crypto';
import { join } from 'node:path';
import { SecurityError } from './errors.js';
import { ensurePrivateDir, readPrivateFile, writeFileOnce } from './key-file.js';

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
  /** The private key, kept inside node:crypto (never exported as raw bytes here). */
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
  return createHash('sha256').update(publicKey).digest().subarray(0, NODE_ID_BYTES).toString('hex');
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
  return createPublicKey({
    key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]),
    format: 'der',
    type: 'spki',
  });
}

function rawPublicKey(privateKey: KeyObject): Buffer {
  const der = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(ED25519_SPKI_PREFIX.length));
}

/**
 * The identity of an Ed25519 private key.
 * @throws {TypeError} when `privateKey` is not an Ed25519 private key.
 */
export function identityFromPrivateKey(privateKey: KeyObject): Identity {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new TypeError(
      `an identity needs an Ed25519 private key, got ${privateKey.type} ${privateKey.asymmetricKeyType}`,
    );
  }
  const publicKey = rawPublicKey(privateKey);
  return {
    id: nodeIdOf(publicKey),
    publicKey,
    privateKey,
    sign: (data) => cryptoSign(null, data, privateKey),
  };
}

/** A new random identity, in memory only (tests, throwaway nodes). */
export function generateIdentity(): Identity {
  return identityFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
}

/**
 * Parses an identity file: an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the
 * format `openssl genpkey -algorithm ed25519` writes.
 * @throws {SecurityError} `ERR_IDENTITY_FILE` when it is not one.
 */
export function parseIdentity(pem: string, source = 'identity file'): Identity {
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
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
  const fresh = generateIdentity();
  const pem = fresh.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  if (writeFileOnce(path, pem)) return fresh;
  // Lost a race with another process starting in the same directory: use the key it wrote.
  const theirs = readPrivateFile(path, 'ERR_IDENTITY_FILE');
  if (theirs === undefined)
    throw new SecurityError('ERR_IDENTITY_FILE', `${path} vanished while being created`);
  return parseIdentity(theirs, path);
}
