import assert from 'node:assert/strict';
import { createHash, createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { directAddonPath, sodium, sodiumLoader, wrapAddon, type Sodium } from '../../lib/security/sodium.js';

const require = createRequire(import.meta.url);
/** sodium-native's own entry: the reference the direct wrappers must agree with. */
const reference = require('sodium-native') as Sodium;
const packageJson = require.resolve('sodium-native/package.json');
const { version } = require(packageJson) as { version: string };
const packageDir = dirname(packageJson);

/** The wrappers over the addon itself, whichever way this process loaded libsodium. */
const wrapped = wrapAddon(require('sodium-native/binding') as Parameters<typeof wrapAddon>[0]);

/** A view at a non-zero offset of a larger buffer, as frames are (the addon takes buffer + offset). */
const view = (bytes: Uint8Array): Buffer => {
  const backing = Buffer.alloc(bytes.length + 11, 0xa5);
  backing.set(bytes, 7);
  return backing.subarray(7, 7 + bytes.length);
};
const bytes = (min: number, max: number): fc.Arbitrary<Uint8Array> =>
  fc.uint8Array({ minLength: min, maxLength: max });

/** Four zeroed 32-byte buffers: X25519 keys and results. */
const fourKeys = (): [Buffer, Buffer, Buffer, Buffer] => [
  Buffer.alloc(32),
  Buffer.alloc(32),
  Buffer.alloc(32),
  Buffer.alloc(32),
];

describe('sodium (libsodium from sodium-native)', () => {
  it('loads the addon directly for the tested sodium-native on a platform it ships a prebuild for', () => {
    const file = join(packageDir, 'prebuilds', 'linux-x64', 'sodium-native.node');
    const present = (path: string) => path === file;
    assert.equal(directAddonPath('5.1.0', packageDir, 'linux', 'x64', present), file);
    assert.equal(
      directAddonPath('5.1.7', packageDir, 'linux', 'x64', present),
      undefined,
      'an untested patch',
    );
    assert.equal(
      directAddonPath('5.2.0', packageDir, 'linux', 'x64', present),
      undefined,
      'an untested version',
    );
    assert.equal(directAddonPath('4.3.3', packageDir, 'linux', 'x64', present), undefined);
    assert.equal(directAddonPath('5.1.0-rc.1', packageDir, 'linux', 'x64', present), undefined);
    assert.equal(directAddonPath('5.1.0', packageDir, 'linux', 'riscv64', present), undefined, 'no prebuild');
    const alpine = (path: string) => present(path) || path === '/etc/alpine-release';
    assert.equal(
      directAddonPath('5.1.0', packageDir, 'linux', 'x64', alpine),
      undefined,
      'musl has its own build',
    );
    const expected = directAddonPath(version, packageDir) === undefined ? 'sodium-native' : 'addon';
    assert.equal(sodiumLoader, expected);
    if (process.platform === 'linux' && process.arch === 'x64' && version === '5.1.0') {
      assert.equal(sodiumLoader, 'addon', 'the locked version on CI is loaded directly');
    }
  });

  it('gives the same BLAKE2b hashes as sodium-native, of views at any offset, with and without a key', () => {
    fc.assert(
      fc.property(
        bytes(0, 300),
        fc.integer({ min: 16, max: 64 }),
        fc.option(bytes(16, 64), { nil: undefined }),
        (input, outBytes, key) => {
          const want = Buffer.alloc(outBytes);
          reference.crypto_generichash(want, input, key);
          for (const impl of [sodium, wrapped]) {
            const out = view(new Uint8Array(outBytes));
            impl.crypto_generichash(out, view(input), key && view(key));
            assert.deepEqual(Buffer.from(out), want);
            const batch = Buffer.alloc(outBytes);
            impl.crypto_generichash_batch(batch, [input.subarray(0, 5), view(input.subarray(5))], key);
            assert.deepEqual(batch, want, 'the batch hashes the concatenation');
          }
        },
      ),
    );
  });

  it('verifies Ed25519 signatures as sodium-native does, of messages at any offset', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    fc.assert(
      fc.property(bytes(0, 200), fc.nat(), fc.boolean(), (message, where, damage) => {
        const signature = sign(null, message, privateKey);
        if (damage) {
          const i = where % (message.length + 64);
          const damaged = i < 64 ? signature : (message = Buffer.from(message));
          const at = i < 64 ? i : i - 64;
          damaged[at] = damaged[at]! ^ 1;
        }
        const want = reference.crypto_sign_verify_detached(signature, message, raw);
        assert.equal(want, !damage);
        for (const impl of [sodium, wrapped]) {
          assert.equal(impl.crypto_sign_verify_detached(view(signature), view(message), view(raw)), want);
        }
      }),
    );
  });

  it('derives Ed25519 key pairs and signs as sodium-native and node:crypto do, and hashes SHA-256 as both', () => {
    const pkcs8 = (seed: Uint8Array) =>
      createPrivateKey({
        key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
        format: 'der',
        type: 'pkcs8',
      });
    fc.assert(
      fc.property(bytes(32, 32), bytes(0, 300), (seed, message) => {
        const [wantPk, wantSk, wantSig] = [Buffer.alloc(32), Buffer.alloc(64), Buffer.alloc(64)];
        reference.crypto_sign_seed_keypair(wantPk, wantSk, seed);
        reference.crypto_sign_detached(wantSig, message, wantSk);
        assert.deepEqual(
          wantSig,
          sign(null, message, pkcs8(seed)),
          'the same signature as OpenSSL (RFC 8032)',
        );
        const wantHash = createHash('sha256').update(message).digest();
        for (const impl of [sodium, wrapped]) {
          const [pk, sk, sig, hash] = [
            view(new Uint8Array(32)),
            view(new Uint8Array(64)),
            view(new Uint8Array(64)),
            view(new Uint8Array(32)),
          ];
          impl.crypto_sign_seed_keypair(pk, sk, view(seed));
          assert.deepEqual([Buffer.from(pk), Buffer.from(sk)], [wantPk, wantSk]);
          impl.crypto_sign_detached(sig, view(message), sk);
          assert.deepEqual(Buffer.from(sig), wantSig);
          assert.ok(impl.crypto_sign_verify_detached(sig, message, pk));
          impl.crypto_hash_sha256(hash, view(message));
          assert.deepEqual(Buffer.from(hash), wantHash);
        }
      }),
      { numRuns: 50 },
    );
  });

  it('fills a view at any offset with random bytes, and only it', () => {
    for (const impl of [sodium, wrapped]) {
      const backing = Buffer.alloc(64 + 14, 0xa5);
      const [a, b] = [backing.subarray(7, 39), backing.subarray(39, 71)];
      impl.randombytes_buf(a);
      impl.randombytes_buf(b);
      assert.notDeepEqual(a, b, 'two draws differ (a 2^-256 chance that they do not)');
      assert.notDeepEqual(a, Buffer.alloc(32, 0xa5));
      assert.deepEqual(
        [...backing.subarray(0, 7), ...backing.subarray(71)],
        Array(14).fill(0xa5) as number[],
      );
    }
  });

  it('encrypts as sodium-native does and decrypts its own, refusing a changed byte with a plain Error', () => {
    fc.assert(
      fc.property(
        bytes(0, 300),
        bytes(32, 32),
        bytes(12, 12),
        fc.option(bytes(0, 40), { nil: null }),
        (m, k, n, ad) => {
          const want = Buffer.alloc(m.length + 16);
          assert.equal(
            reference.crypto_aead_chacha20poly1305_ietf_encrypt(want, m, ad, null, n, k),
            want.length,
          );
          for (const impl of [sodium, wrapped]) {
            const c = view(new Uint8Array(m.length + 16));
            assert.equal(
              impl.crypto_aead_chacha20poly1305_ietf_encrypt(c, view(m), ad, null, view(n), view(k)),
              c.length,
            );
            assert.deepEqual(Buffer.from(c), want);
            const back = new Uint8Array(m.length);
            assert.equal(impl.crypto_aead_chacha20poly1305_ietf_decrypt(back, null, c, ad, n, k), m.length);
            assert.deepEqual(back, m);
            c[m.length % c.length]! ^= 0x40;
            assert.throws(
              () => impl.crypto_aead_chacha20poly1305_ietf_decrypt(back, null, c, ad, n, k),
              (err: unknown) =>
                err instanceof Error && !(err instanceof RangeError) && !(err instanceof TypeError),
            );
          }
        },
      ),
    );
  });

  it('derives the same X25519 keys and shared secrets as sodium-native', () => {
    fc.assert(
      fc.property(bytes(32, 32), bytes(32, 32), (seedA, seedB) => {
        const [pkA, skA, pkB, skB] = fourKeys();
        reference.crypto_kx_seed_keypair(pkA, skA, seedA);
        reference.crypto_kx_seed_keypair(pkB, skB, seedB);
        const want = Buffer.alloc(32);
        reference.crypto_scalarmult(want, skA, pkB);
        for (const impl of [sodium, wrapped]) {
          const [pk, sk, q, shared] = fourKeys();
          impl.crypto_kx_seed_keypair(pk, sk, seedA);
          assert.deepEqual([pk, sk], [pkA, skA]);
          impl.crypto_scalarmult_base(q, skA);
          assert.deepEqual(q, pkA);
          impl.crypto_scalarmult(shared, skB, pkA);
          assert.deepEqual(shared, want, 'both sides agree');
        }
      }),
      { numRuns: 50 },
    );
    for (const impl of [sodium, wrapped]) {
      const [pk, sk, q] = [0, 0, 0].map(() => Buffer.alloc(32)) as [Buffer, Buffer, Buffer];
      impl.crypto_kx_keypair(pk, sk);
      assert.notDeepEqual(sk, Buffer.alloc(32), 'a random key');
      impl.crypto_scalarmult_base(q, sk);
      assert.deepEqual(q, pk);
      impl.sodium_memzero(sk);
      assert.deepEqual(sk, Buffer.alloc(32));
    }
  });

  it('throws a RangeError for a wrong size instead of letting the addon write out of bounds', () => {
    const b = (n: number) => Buffer.alloc(n);
    const calls: [string, (s: Sodium) => unknown][] = [
      ['hash output 15', (s) => s.crypto_generichash(b(15), b(3))],
      ['hash output 65', (s) => s.crypto_generichash(b(65), b(3))],
      ['hash key 15', (s) => s.crypto_generichash(b(32), b(3), b(15))],
      ['batch output 8', (s) => s.crypto_generichash_batch(b(8), [b(3)])],
      ['batch key 65', (s) => s.crypto_generichash_batch(b(32), [b(3)], b(65))],
      ['signature 63', (s) => s.crypto_sign_verify_detached(b(63), b(3), b(32))],
      ['public key 31', (s) => s.crypto_sign_verify_detached(b(64), b(3), b(31))],
      [
        'ciphertext short',
        (s) => s.crypto_aead_chacha20poly1305_ietf_encrypt(b(18), b(3), null, null, b(12), b(32)),
      ],
      ['nonce 11', (s) => s.crypto_aead_chacha20poly1305_ietf_encrypt(b(19), b(3), null, null, b(11), b(32))],
      ['key 31', (s) => s.crypto_aead_chacha20poly1305_ietf_decrypt(b(3), null, b(19), null, b(12), b(31))],
      [
        'plaintext long',
        (s) => s.crypto_aead_chacha20poly1305_ietf_decrypt(b(4), null, b(19), null, b(12), b(32)),
      ],
      [
        'ciphertext under a tag',
        (s) => s.crypto_aead_chacha20poly1305_ietf_decrypt(b(0), null, b(15), null, b(12), b(32)),
      ],
      ['kx public 31', (s) => s.crypto_kx_keypair(b(31), b(32))],
      ['kx seed 31', (s) => s.crypto_kx_seed_keypair(b(32), b(32), b(31))],
      ['scalarmult_base secret 33', (s) => s.crypto_scalarmult_base(b(32), b(33))],
      ['scalarmult public 31', (s) => s.crypto_scalarmult(b(32), b(32), b(31))],
      ['sign public key 31', (s) => s.crypto_sign_seed_keypair(b(31), b(64), b(32))],
      ['sign secret key 63', (s) => s.crypto_sign_seed_keypair(b(32), b(63), b(32))],
      ['sign seed 33', (s) => s.crypto_sign_seed_keypair(b(32), b(64), b(33))],
      ['signature 63 to write', (s) => s.crypto_sign_detached(b(63), b(3), b(64))],
      ['signing key 32', (s) => s.crypto_sign_detached(b(64), b(3), b(32))],
      ['sha256 output 31', (s) => s.crypto_hash_sha256(b(31), b(3))],
    ];
    for (const [what, call] of calls) {
      assert.throws(() => call(wrapped), RangeError, what);
      if (sodiumLoader === 'addon') assert.throws(() => call(sodium), RangeError, what);
    }
  });

  it('throws a TypeError for anything but bytes, where the addon would read or write at random', () => {
    const b = (n: number) => Buffer.alloc(n);
    // Deliberately wrong types, as an untyped caller could pass them.
    const as = (x: unknown) => x as Uint8Array;
    const wrong = [
      new ArrayBuffer(32),
      new DataView(new ArrayBuffer(32)),
      'x'.repeat(32),
      undefined,
      { byteLength: 32 },
    ];
    for (const [i, w] of wrong.entries()) {
      const calls: [string, (s: Sodium) => unknown][] = [
        ['memzero', (s) => s.sodium_memzero(as(w))],
        ['kx public key', (s) => s.crypto_kx_keypair(as(w), b(32))],
        ['kx seed', (s) => s.crypto_kx_seed_keypair(b(32), b(32), as(w))],
        ['scalarmult secret', (s) => s.crypto_scalarmult_base(b(32), as(w))],
        ['scalarmult public', (s) => s.crypto_scalarmult(b(32), b(32), as(w))],
        [
          'encrypt plaintext',
          (s) => s.crypto_aead_chacha20poly1305_ietf_encrypt(b(48), as(w), null, null, b(12), b(32)),
        ],
        [
          'encrypt ciphertext',
          (s) => s.crypto_aead_chacha20poly1305_ietf_encrypt(as(w), b(16), null, null, b(12), b(32)),
        ],
        [
          'decrypt nonce',
          (s) => s.crypto_aead_chacha20poly1305_ietf_decrypt(b(16), null, b(32), null, as(w), b(32)),
        ],
        ['verify message', (s) => s.crypto_sign_verify_detached(b(64), as(w), b(32))],
        ['hash input', (s) => s.crypto_generichash(b(32), as(w))],
        ['hash output', (s) => s.crypto_generichash(as(w), b(3))],
        ['batch entry', (s) => s.crypto_generichash_batch(b(32), [b(3), as(w)])],
        ['random buffer', (s) => s.randombytes_buf(as(w))],
        ['sign seed', (s) => s.crypto_sign_seed_keypair(b(32), b(64), as(w))],
        ['message to sign', (s) => s.crypto_sign_detached(b(64), as(w), b(64))],
        ['sha256 input', (s) => s.crypto_hash_sha256(b(32), as(w))],
      ];
      for (const [what, call] of calls) {
        assert.throws(() => call(wrapped), TypeError, `${what}: wrong argument ${i}`);
        if (sodiumLoader === 'addon')
          assert.throws(() => call(sodium), TypeError, `${what}: wrong argument ${i}`);
      }
    }
    const notNull = (s: Sodium) =>
      s.crypto_aead_chacha20poly1305_ietf_encrypt(b(19), b(3), null, b(1) as unknown as null, b(12), b(32));
    assert.throws(() => notNull(wrapped), TypeError, 'nsec must be null');
    // Falsy additional data is none, as in sodium-native.
    const [none, empty] = [b(19), b(19)];
    wrapped.crypto_aead_chacha20poly1305_ietf_encrypt(none, b(3), null, null, b(12), b(32));
    wrapped.crypto_aead_chacha20poly1305_ietf_encrypt(empty, b(3), '' as unknown as null, null, b(12), b(32));
    assert.deepEqual(empty, none);
  });
});
