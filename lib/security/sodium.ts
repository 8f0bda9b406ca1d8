import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The sizes (bytes) libsodium exports that are used here. */
export interface SodiumSizes {
  readonly crypto_aead_chacha20poly1305_ietf_ABYTES: number;
  readonly crypto_aead_chacha20poly1305_ietf_KEYBYTES: number;
  readonly crypto_aead_chacha20poly1305_ietf_NPUBBYTES: number;
  readonly crypto_kx_SEEDBYTES: number;
  readonly crypto_scalarmult_BYTES: number;
  readonly crypto_scalarmult_SCALARBYTES: number;
  readonly crypto_sign_PUBLICKEYBYTES: number;
  readonly crypto_sign_SECRETKEYBYTES: number;
  readonly crypto_sign_SEEDBYTES: number;
  readonly crypto_sign_BYTES: number;
  readonly crypto_hash_sha256_BYTES: number;
}

/**
 * libsodium, the functions this package and noise-handshake call, from sodium-native's native addon.
 *
 * sodium-native's entry (index.js) wraps its ~700 functions in argument checks and finds its addon
 * through a resolver of its own; loading that costs a node ~1 MB of memory and ~0.1 s of start-up
 * (README, Performance). This module loads the same addon file directly and wraps only the functions
 * used, with sodium-native's checks of types and sizes (a TypeError or RangeError here; the prebuilt
 * addon checks nothing itself, so a wrong argument would have it read or write out of bounds). It
 * does so only where the addon's calling conventions are the ones these wrappers were written and
 * tested against: sodium-native 5.1.0, with a prebuilt addon for this platform. Anywhere else it
 * uses sodium-native's own entry, which has the same interface. `npm run build` points
 * noise-handshake's `sodium-universal` (which is sodium-native) here too, so the bundled CLI loads
 * sodium-native once, this way.
 */
export interface Sodium extends SodiumSizes {
  /** Overwrites `buf` with zeros (in a way the compiler cannot leave out). */
  sodium_memzero: (buf: Uint8Array) => void;
  /** True when `sig` is `pk`'s Ed25519 signature of `m` (libsodium's strict checks: canonical encodings, no small-order keys). */
  crypto_sign_verify_detached: (sig: Uint8Array, m: Uint8Array, pk: Uint8Array) => boolean;
  /** BLAKE2b of `input`, `output.length` bytes (16..64), written into `output`. */
  crypto_generichash: (output: Uint8Array, input: Uint8Array, key?: Uint8Array) => void;
  /** BLAKE2b of the concatenation of `batch`, `output.length` bytes (16..64), written into `output`. */
  crypto_generichash_batch: (output: Uint8Array, batch: readonly Uint8Array[], key?: Uint8Array) => void;
  /** Writes `m`'s ciphertext and tag into `c` (m.length + ABYTES bytes); returns the bytes written. */
  crypto_aead_chacha20poly1305_ietf_encrypt: (
    c: Uint8Array,
    m: Uint8Array,
    ad: Uint8Array | null | undefined,
    nsec: null,
    npub: Uint8Array,
    k: Uint8Array,
  ) => number;
  /** Writes the plaintext of `c` into `m`; throws a plain Error when the tag does not verify. */
  crypto_aead_chacha20poly1305_ietf_decrypt: (
    m: Uint8Array,
    nsec: null,
    c: Uint8Array,
    ad: Uint8Array | null | undefined,
    npub: Uint8Array,
    k: Uint8Array,
  ) => number;
  /** A random X25519 key pair, written into `pk` and `sk` (32 bytes each). */
  crypto_kx_keypair: (pk: Uint8Array, sk: Uint8Array) => void;
  /** The X25519 key pair derived from a 32-byte `seed`. */
  crypto_kx_seed_keypair: (pk: Uint8Array, sk: Uint8Array, seed: Uint8Array) => void;
  /** `q` = the X25519 public key of secret `n`. */
  crypto_scalarmult_base: (q: Uint8Array, n: Uint8Array) => void;
  /** `q` = X25519 of secret `n` and public `p`. */
  crypto_scalarmult: (q: Uint8Array, n: Uint8Array, p: Uint8Array) => void;
  /** Fills `buf` with random bytes from the operating system's generator. */
  randombytes_buf: (buf: Uint8Array) => void;
  /** The Ed25519 key pair of a 32-byte `seed`: public key `pk` (32 bytes), secret key `sk` (64: seed and public key). */
  crypto_sign_seed_keypair: (pk: Uint8Array, sk: Uint8Array, seed: Uint8Array) => void;
  /** Writes secret key `sk`'s Ed25519 signature of `m` (64 bytes) into `sig`. */
  crypto_sign_detached: (sig: Uint8Array, m: Uint8Array, sk: Uint8Array) => void;
  /** SHA-256 of `input`, written into `output` (32 bytes). */
  crypto_hash_sha256: (output: Uint8Array, input: Uint8Array) => void;
}

/** The addon's own functions, as sodium-native 5.1 calls them. */
interface Addon extends SodiumSizes {
  sodium_memzero(buf: Uint8Array): void;
  crypto_sign_verify_detached(
    sig: ArrayBufferLike,
    sigOffset: number,
    sigLength: number,
    m: ArrayBufferLike,
    mOffset: number,
    mLength: number,
    pk: ArrayBufferLike,
    pkOffset: number,
    pkLength: number,
  ): boolean;
  crypto_generichash(
    out: ArrayBufferLike,
    outOffset: number,
    outLength: number,
    input: ArrayBufferLike,
    inputOffset: number,
    inputLength: number,
    key: ArrayBufferLike,
    keyOffset: number,
    keyLength: number,
  ): number;
  crypto_generichash_batch(
    out: Uint8Array,
    batch: readonly Uint8Array[],
    useKey: boolean,
    key: Uint8Array,
  ): number;
  crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Uint8Array,
    m: Uint8Array,
    ad: Uint8Array | undefined,
    npub: Uint8Array,
    k: Uint8Array,
  ): number;
  crypto_aead_chacha20poly1305_ietf_decrypt(
    m: Uint8Array,
    c: Uint8Array,
    ad: Uint8Array | undefined,
    npub: Uint8Array,
    k: Uint8Array,
  ): number;
  crypto_kx_keypair(pk: Uint8Array, sk: Uint8Array): number;
  crypto_kx_seed_keypair(pk: Uint8Array, sk: Uint8Array, seed: Uint8Array): number;
  crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): number;
  crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): number;
  randombytes_buf(buf: ArrayBufferLike, offset: number, length: number): void;
  crypto_sign_seed_keypair(pk: Uint8Array, sk: Uint8Array, seed: Uint8Array): number;
  crypto_sign_detached(sig: Uint8Array, m: Uint8Array, sk: Uint8Array): number;
  crypto_hash_sha256(output: Uint8Array, input: Uint8Array): number;
}

/**
 * The sodium-native versions whose addon these wrappers were written against and tested with
 * (spec/security/sodium.spec.ts). Exact: the addon's calling conventions are not its public API.
 */
const TESTED_VERSIONS: ReadonlySet<string> = new Set(['5.1.0']);

const require = createRequire(import.meta.url);

/** The addon file to load directly, or undefined where sodium-native's own entry must be used. */
export function directAddonPath(
  version: string,
  packageDir: string,
  platform: string = process.platform,
  arch: string = process.arch,
  exists: (path: string) => boolean = existsSync,
): string | undefined {
  if (!TESTED_VERSIONS.has(version)) return undefined;
  // musl: 5.1.0 ships no prebuild for it; sodium-native's own resolution finds what was built.
  if (platform === 'linux' && exists('/etc/alpine-release')) return undefined;
  const file = join(packageDir, 'prebuilds', `${platform}-${arch}`, 'sodium-native.node');
  return exists(file) ? file : undefined;
}

/** The addon, loaded directly where {@link directAddonPath} says so; undefined otherwise. */
function loadAddon(): Addon | undefined {
  let file: string | undefined;
  try {
    const packageJson = require.resolve('sodium-native/package.json');
    const { version } = require(packageJson) as { version: string };
    file = directAddonPath(version, dirname(packageJson));
  } catch {
    return undefined; // a layout this module does not know: sodium-native's entry decides
  }
  return file === undefined ? undefined : (require(file) as Addon);
}

const EMPTY = new Uint8Array(0);
/** {@link EMPTY}'s buffer: the key of an unkeyed hash, as the addon takes it (with offset and length 0). */
const EMPTY_BUFFER = EMPTY.buffer;
const MAX_U32 = 0xffffffff;

/**
 * Checks that `buf` is bytes the addon can take. The prebuilt addon checks nothing itself (its
 * asserts are compiled out): a wrong type or size would have it read or write past the memory given.
 */
function bytes(what: string, buf: unknown): asserts buf is Uint8Array {
  if (!(buf instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
}

function exactly(what: string, buf: unknown, size: number): asserts buf is Uint8Array {
  bytes(what, buf);
  if (buf.byteLength !== size) throw new RangeError(`${what} must be ${size} bytes, not ${buf.byteLength}`);
}

/** For the calls that pass a buffer as (ArrayBuffer, 32-bit offset, 32-bit length). */
function within32(what: string, buf: unknown): asserts buf is Uint8Array {
  bytes(what, buf);
  if (buf.byteOffset + buf.byteLength > MAX_U32) throw new RangeError(`${what} must lie within 4 GiB`);
}

function hashArguments(output: unknown, key: unknown): Uint8Array {
  bytes('a BLAKE2b output', output);
  if (output.byteLength < 16 || output.byteLength > 64) {
    throw new RangeError(`a BLAKE2b output must be 16..64 bytes, not ${output.byteLength}`);
  }
  if (key === undefined || key === null) return EMPTY;
  within32('a BLAKE2b key', key);
  if (key.byteLength < 16 || key.byteLength > 64) {
    throw new RangeError(`a BLAKE2b key must be 16..64 bytes, not ${key.byteLength}`);
  }
  return key;
}

function nothing(nsec: unknown): void {
  if (nsec !== null) throw new TypeError('nsec must be null');
}

/** Additional data: none for null, undefined or another falsy value (as sodium-native), else bytes. */
function additional(ad: unknown): Uint8Array | undefined {
  if (!ad) return undefined;
  bytes('additional data', ad);
  return ad;
}

function ok(status: number, what: string): void {
  if (status !== 0) throw new Error(`${what} failed (status ${status})`);
}

/** The {@link Sodium} functions over the addon itself, with sodium-native's argument checks. */
export function wrapAddon(addon: Addon): Sodium {
  const ABYTES = addon.crypto_aead_chacha20poly1305_ietf_ABYTES;
  const KEYBYTES = addon.crypto_aead_chacha20poly1305_ietf_KEYBYTES;
  const NPUBBYTES = addon.crypto_aead_chacha20poly1305_ietf_NPUBBYTES;
  const X25519 = addon.crypto_scalarmult_BYTES;
  const SCALAR = addon.crypto_scalarmult_SCALARBYTES;
  const SIGN_PUBLIC = addon.crypto_sign_PUBLICKEYBYTES;
  const SIGN_SECRET = addon.crypto_sign_SECRETKEYBYTES;
  const SIGN_SEED = addon.crypto_sign_SEEDBYTES;
  const SIGNATURE = addon.crypto_sign_BYTES;
  const SHA256 = addon.crypto_hash_sha256_BYTES;
  const aeadKeys = (npub: unknown, k: unknown): void => {
    exactly('a ChaCha20-Poly1305 nonce', npub, NPUBBYTES);
    exactly('a ChaCha20-Poly1305 key', k, KEYBYTES);
  };
  const x25519Pair = (pk: unknown, sk: unknown): void => {
    exactly('an X25519 public key', pk, X25519);
    exactly('an X25519 secret key', sk, SCALAR);
  };
  return {
    crypto_aead_chacha20poly1305_ietf_ABYTES: ABYTES,
    crypto_aead_chacha20poly1305_ietf_KEYBYTES: KEYBYTES,
    crypto_aead_chacha20poly1305_ietf_NPUBBYTES: NPUBBYTES,
    crypto_kx_SEEDBYTES: addon.crypto_kx_SEEDBYTES,
    crypto_scalarmult_BYTES: X25519,
    crypto_scalarmult_SCALARBYTES: SCALAR,
    crypto_sign_PUBLICKEYBYTES: SIGN_PUBLIC,
    crypto_sign_SECRETKEYBYTES: SIGN_SECRET,
    crypto_sign_SEEDBYTES: SIGN_SEED,
    crypto_sign_BYTES: SIGNATURE,
    crypto_hash_sha256_BYTES: SHA256,
    sodium_memzero(buf) {
      bytes('the buffer to zero', buf);
      addon.sodium_memzero(buf);
    },
    crypto_sign_verify_detached(sig, m, pk) {
      within32('an Ed25519 signature', sig);
      within32('a signed message', m);
      within32('an Ed25519 public key', pk);
      if (sig.byteLength < 64)
        throw new RangeError(`an Ed25519 signature must be 64 bytes, not ${sig.byteLength}`);
      exactly('an Ed25519 public key', pk, 32);
      return addon.crypto_sign_verify_detached(
        sig.buffer,
        sig.byteOffset,
        sig.byteLength,
        m.buffer,
        m.byteOffset,
        m.byteLength,
        pk.buffer,
        pk.byteOffset,
        pk.byteLength,
      );
    },
    crypto_generichash(output, input, key) {
      // The usual call (unkeyed, sound buffers) checked in one expression: this runs a few times
      // per message at every node, mostly before V8 optimises it, and the helpers below were seven
      // calls per hash. Each offset and length is read once: before V8 optimises, each read of a
      // typed array's byteOffset, byteLength or buffer goes through an inline cache to a getter
      // (reading them twice, and the empty key's three, cost a mesh3 sender ~2,700 instructions per
      // message: callgrind). Anything else goes through the helpers, for the error they throw.
      if (
        (key === undefined || key === null) &&
        output instanceof Uint8Array &&
        input instanceof Uint8Array
      ) {
        const outAt = output.byteOffset;
        const outBytes = output.byteLength;
        const inAt = input.byteOffset;
        const inBytes = input.byteLength;
        if (outBytes >= 16 && outBytes <= 64 && outAt + outBytes <= MAX_U32 && inAt + inBytes <= MAX_U32) {
          const status = addon.crypto_generichash(
            output.buffer,
            outAt,
            outBytes,
            input.buffer,
            inAt,
            inBytes,
            EMPTY_BUFFER,
            0,
            0,
          );
          if (status !== 0) ok(status, 'BLAKE2b');
          return;
        }
      }
      const k = hashArguments(output, key);
      within32('a BLAKE2b output', output);
      within32('a BLAKE2b input', input);
      const status = addon.crypto_generichash(
        output.buffer,
        output.byteOffset,
        output.byteLength,
        input.buffer,
        input.byteOffset,
        input.byteLength,
        k.buffer,
        k.byteOffset,
        k.byteLength,
      );
      if (status !== 0) ok(status, 'BLAKE2b');
    },
    crypto_generichash_batch(output, batch, key) {
      const k = hashArguments(output, key);
      if (!Array.isArray(batch)) throw new TypeError('a BLAKE2b batch must be an array');
      for (const part of batch) bytes('a BLAKE2b batch entry', part);
      ok(addon.crypto_generichash_batch(output, batch, k.byteLength !== 0, k), 'BLAKE2b');
    },
    crypto_aead_chacha20poly1305_ietf_encrypt(c, m, ad, nsec, npub, k) {
      nothing(nsec);
      bytes('a ciphertext', c);
      bytes('a plaintext', m);
      if (c.byteLength !== m.byteLength + ABYTES || c.byteLength > MAX_U32) {
        throw new RangeError(
          `a ciphertext of ${m.byteLength} bytes takes ${m.byteLength + ABYTES}, not ${c.byteLength}`,
        );
      }
      aeadKeys(npub, k);
      const written = addon.crypto_aead_chacha20poly1305_ietf_encrypt(c, m, additional(ad), npub, k);
      if (written < 0) throw new Error('could not encrypt data');
      return written;
    },
    crypto_aead_chacha20poly1305_ietf_decrypt(m, nsec, c, ad, npub, k) {
      nothing(nsec);
      bytes('a plaintext', m);
      bytes('a ciphertext', c);
      if (m.byteLength !== c.byteLength - ABYTES || m.byteLength > MAX_U32) {
        throw new RangeError(
          `the plaintext of ${c.byteLength} bytes takes ${c.byteLength - ABYTES}, not ${m.byteLength}`,
        );
      }
      aeadKeys(npub, k);
      const read = addon.crypto_aead_chacha20poly1305_ietf_decrypt(m, c, additional(ad), npub, k);
      if (read < 0) throw new Error('could not verify data');
      return read;
    },
    crypto_kx_keypair(pk, sk) {
      x25519Pair(pk, sk);
      ok(addon.crypto_kx_keypair(pk, sk), 'X25519 key generation');
    },
    crypto_kx_seed_keypair(pk, sk, seed) {
      x25519Pair(pk, sk);
      exactly('an X25519 seed', seed, addon.crypto_kx_SEEDBYTES);
      ok(addon.crypto_kx_seed_keypair(pk, sk, seed), 'X25519 key generation');
    },
    crypto_scalarmult_base(q, n) {
      x25519Pair(q, n);
      ok(addon.crypto_scalarmult_base(q, n), 'X25519');
    },
    crypto_scalarmult(q, n, p) {
      exactly('an X25519 result', q, X25519);
      exactly('an X25519 secret key', n, SCALAR);
      exactly('an X25519 public key', p, X25519);
      ok(addon.crypto_scalarmult(q, n, p), 'X25519');
    },
    randombytes_buf(buf) {
      within32('the buffer to fill', buf);
      addon.randombytes_buf(buf.buffer, buf.byteOffset, buf.byteLength);
    },
    crypto_sign_seed_keypair(pk, sk, seed) {
      exactly('an Ed25519 public key', pk, SIGN_PUBLIC);
      exactly('an Ed25519 secret key', sk, SIGN_SECRET);
      exactly('an Ed25519 seed', seed, SIGN_SEED);
      ok(addon.crypto_sign_seed_keypair(pk, sk, seed), 'Ed25519 key generation');
    },
    crypto_sign_detached(sig, m, sk) {
      exactly('an Ed25519 signature', sig, SIGNATURE);
      bytes('a message to sign', m);
      exactly('an Ed25519 secret key', sk, SIGN_SECRET);
      ok(addon.crypto_sign_detached(sig, m, sk), 'Ed25519 signing');
    },
    crypto_hash_sha256(output, input) {
      exactly('a SHA-256 output', output, SHA256);
      bytes('a SHA-256 input', input);
      ok(addon.crypto_hash_sha256(output, input), 'SHA-256');
    },
  };
}

const addon = loadAddon();

/** How libsodium was loaded: its addon directly, or through sodium-native's entry. */
export const sodiumLoader: 'addon' | 'sodium-native' = addon === undefined ? 'sodium-native' : 'addon';

/** libsodium's functions used here (see the module's doc). */
export const sodium: Sodium = addon === undefined ? (require('sodium-native') as Sodium) : wrapAddon(addon);

// Named exports: what noise-handshake reads from `require('sodium-universal')` in the bundled CLI.
export const {
  crypto_aead_chacha20poly1305_ietf_ABYTES,
  crypto_aead_chacha20poly1305_ietf_KEYBYTES,
  crypto_aead_chacha20poly1305_ietf_NPUBBYTES,
  crypto_kx_SEEDBYTES,
  crypto_scalarmult_BYTES,
  crypto_scalarmult_SCALARBYTES,
  sodium_memzero,
  crypto_sign_verify_detached,
  crypto_generichash,
  crypto_generichash_batch,
  crypto_aead_chacha20poly1305_ietf_encrypt,
  crypto_aead_chacha20poly1305_ietf_decrypt,
  crypto_kx_keypair,
  crypto_kx_seed_keypair,
  crypto_scalarmult_base,
  crypto_scalarmult,
} = sodium;
