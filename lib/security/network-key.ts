import { Buffer } from 'node:buffer';
import { dirname } from 'node:path';
import { randomBytes, sha256 } from './bytes.js';
import { SecurityError } from './errors.js';
import { ensurePrivateDir, readPrivateFile, writeFileOnce } from './key-file.js';

/** Bytes of a network key: 256 bits, the Noise PSK size. */
export const NETWORK_KEY_BYTES = 32;
/** First line of a network key file; names the format so that a future one can be told apart. */
export const NETWORK_KEY_HEADER = 'p2p-chat network key v1';
/** Bytes of a network tag (see {@link networkTag}). */
export const NETWORK_TAG_BYTES = 32;

/** Domain-separation prefixes of the tag hash; the public one stands for "no network key". */
const TAG_PREFIX = Buffer.from('p2p-chat-v1\0network-key\0', 'utf8');
const PUBLIC_TAG_INPUT = Buffer.from('p2p-chat-v1\0public-network\0', 'utf8');

/** A fresh random network key. */
export function generateNetworkKey(): Buffer {
  return randomBytes(NETWORK_KEY_BYTES);
}

function checkKey(key: Uint8Array): void {
  if (key.length !== NETWORK_KEY_BYTES) {
    throw new RangeError(`a network key is ${NETWORK_KEY_BYTES} bytes, got ${key.length}`);
  }
}

/**
 * The text of a network key file: the header line, then the key in 64 lowercase hex digits.
 * @throws {RangeError} when `key` is not 32 bytes.
 */
export function formatNetworkKey(key: Uint8Array): string {
  checkKey(key);
  return `${NETWORK_KEY_HEADER}\n${Buffer.from(key).toString('hex')}\n`;
}

/**
 * Parses the text of a network key file. Blank lines and lines starting with `#` are ignored; the
 * rest must be the header line followed by 64 hex digits (either case), and nothing else.
 * @throws {SecurityError} `ERR_NETWORK_KEY_FILE` when the text is not a network key.
 */
export function parseNetworkKey(text: string, source = 'network key file'): Buffer {
  const lines = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (lines[0] !== NETWORK_KEY_HEADER) {
    throw new SecurityError('ERR_NETWORK_KEY_FILE', `${source} does not start with "${NETWORK_KEY_HEADER}"`);
  }
  const hex = lines[1];
  if (lines.length !== 2 || hex === undefined || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new SecurityError(
      'ERR_NETWORK_KEY_FILE',
      `${source} must hold one line of ${NETWORK_KEY_BYTES * 2} hex digits after its header`,
    );
  }
  return Buffer.from(hex, 'hex');
}

/**
 * Creates a network key file at `path` with a fresh random key (mode 0600, written atomically; its
 * directory is created with mode 0700 when missing) and returns the key. Copy the file to every node
 * of the network, by a channel you trust.
 * @throws {SecurityError} `ERR_NETWORK_KEY_FILE` when `path` exists already (it is never overwritten),
 *   its directory is writable by other users, or the file system refuses the directory or the file
 *   (a parent that is a regular file, no permission, a read-only file system, no hard links).
 */
export function createNetworkKeyFile(path: string): Buffer {
  const key = generateNetworkKey();
  let created: boolean;
  try {
    ensurePrivateDir(dirname(path), 'ERR_NETWORK_KEY_FILE');
    created = writeFileOnce(path, formatNetworkKey(key));
  } catch (err) {
    // A refusal of the file system is the user's to fix, as a missing key file is: one line, not a
    // stack trace and exit 70 from the CLI.
    if (!isSystemError(err)) throw err;
    throw new SecurityError('ERR_NETWORK_KEY_FILE', `cannot create ${path}: ${err.message}`, { cause: err });
  }
  if (!created) {
    throw new SecurityError('ERR_NETWORK_KEY_FILE', `${path} exists already; it is never overwritten`);
  }
  return key;
}

/** An error of a file system call (it names the call and the errno), not a bug. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  if (!(err instanceof Error) || err instanceof TypeError || err instanceof RangeError) return false;
  const { errno, syscall } = err as NodeJS.ErrnoException;
  return typeof errno === 'number' && typeof syscall === 'string';
}

/**
 * Loads and validates the network key file at `path`.
 * @throws {SecurityError} `ERR_NETWORK_KEY_FILE` when it is missing, readable by other users, or malformed.
 */
export function loadNetworkKey(path: string): Buffer {
  const text = readPrivateFile(path, 'ERR_NETWORK_KEY_FILE');
  if (text === undefined) throw new SecurityError('ERR_NETWORK_KEY_FILE', `${path} does not exist`);
  return parseNetworkKey(text, path);
}

/**
 * The 32-byte tag of a network, bound into every message signature so that a message signed for one
 * network does not verify in another: SHA-256 of a domain-separated network key, or of a fixed
 * "public network" string when there is no key. One-way: the tag does not reveal the key.
 * @throws {RangeError} when `key` is given and is not 32 bytes.
 */
export function networkTag(key?: Uint8Array): Buffer {
  if (key === undefined) return sha256(PUBLIC_TAG_INPUT);
  checkKey(key);
  return sha256(TAG_PREFIX, key);
}

/**
 * A short fingerprint of a network (8 hex digits of its tag), for logs and for users to compare that
 * two nodes hold the same key without showing the key.
 */
export function networkFingerprint(key?: Uint8Array): string {
  return key === undefined ? 'public' : networkTag(key).subarray(0, 4).toString('hex');
}
