import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  generateIdentity,
  IDENTITY_FILE,
  identityFromPrivateKey,
  loadOrCreateIdentity,
  nodeIdOf,
  parseIdentity,
  publicKeyFromRaw,
} from '../../lib/security/identity.js';
import { securityError, tempDir } from './helpers.js';

const WIRE_ID = /^[0-9a-zA-Z_-]{1,64}$/;
const posix = process.platform !== 'win32';

describe('identity', () => {
  it('creates the key pair on first start, file mode 0600 in a directory of mode 0700', () => {
    const dir = join(tempDir(), 'state', 'node-8001');
    const identity = loadOrCreateIdentity(dir);
    const path = join(dir, IDENTITY_FILE);
    assert.match(readFileSync(path, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    if (posix) {
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.equal(statSync(dir).mode & 0o777, 0o700);
    }
    assert.deepEqual(readdirSync(dir), [IDENTITY_FILE], 'no temporary file is left behind');
    assert.equal(identity.publicKey.length, 32);
  });

  it('loads the same identity on every later start', () => {
    const dir = tempDir();
    const first = loadOrCreateIdentity(dir);
    const before = readFileSync(join(dir, IDENTITY_FILE), 'utf8');
    const second = loadOrCreateIdentity(dir);
    assert.equal(second.id, first.id);
    assert.ok(second.publicKey.equals(first.publicKey));
    assert.equal(readFileSync(join(dir, IDENTITY_FILE), 'utf8'), before, 'the file is never rewritten');
    const data = Buffer.from('hello');
    assert.ok(verify(null, data, publicKeyFromRaw(first.publicKey), second.sign(data)));
  });

  it('derives a node id of 32 hex digits from the public key, valid on the wire', () => {
    const identity = generateIdentity();
    assert.match(identity.id, /^[0-9a-f]{32}$/);
    assert.match(identity.id, WIRE_ID);
    assert.equal(nodeIdOf(identity.publicKey), identity.id);
    assert.notEqual(generateIdentity().id, identity.id);
  });

  it('computes the id as the first 16 bytes of SHA-256 of the raw key', () => {
    // RFC 8032 test 1 public key; its SHA-256 computed independently (sha256sum of the 32 bytes).
    const key = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex');
    assert.equal(
      nodeIdOf(key),
      '21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9'.slice(0, 32),
    );
  });

  it('rejects a public key of the wrong size with a RangeError', () => {
    assert.throws(() => nodeIdOf(Buffer.alloc(31)), RangeError);
    assert.throws(() => publicKeyFromRaw(Buffer.alloc(33)), RangeError);
  });

  it('refuses a key file that other users can read', () => {
    const dir = tempDir();
    loadOrCreateIdentity(dir);
    chmodSync(join(dir, IDENTITY_FILE), 0o644);
    assert.throws(() => loadOrCreateIdentity(dir), securityError('ERR_IDENTITY_FILE', /chmod 600/));
  });

  it('refuses a directory that other users can write to', () => {
    const dir = join(tempDir(), 'shared');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    assert.throws(() => loadOrCreateIdentity(dir), securityError('ERR_IDENTITY_FILE', /chmod 700/));
  });

  it('refuses a shared directory (sticky, as /tmp is) without advising chmod 700 on it, which would lock its other users out', () => {
    if (!posix) return;
    const dir = join(tempDir(), 'sticky');
    mkdirSync(dir);
    chmodSync(dir, 0o1777);
    assert.throws(
      () => loadOrCreateIdentity(dir),
      securityError('ERR_IDENTITY_FILE', /\(mode 1777\).*a new directory/),
    );
    assert.throws(
      () => loadOrCreateIdentity(dir),
      (err: unknown) => {
        assert.doesNotMatch((err as Error).message, /chmod/);
        return true;
      },
    );
  });

  it('refuses a key file that is not a PEM private key', () => {
    const dir = tempDir();
    writeFileSync(join(dir, IDENTITY_FILE), 'not a key\n', { mode: 0o600 });
    assert.throws(() => loadOrCreateIdentity(dir), securityError('ERR_IDENTITY_FILE'));
  });

  it('refuses a private key of another algorithm', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    assert.throws(() => parseIdentity(pem), securityError('ERR_IDENTITY_FILE', /not an Ed25519/));
    assert.throws(() => identityFromPrivateKey(privateKey), TypeError);
  });

  it('refuses a key file that is too large to be a key', () => {
    const dir = tempDir();
    writeFileSync(join(dir, IDENTITY_FILE), 'x'.repeat(10_000), { mode: 0o600 });
    assert.throws(() => loadOrCreateIdentity(dir), securityError('ERR_IDENTITY_FILE', /not a key file/));
  });

  it('reads a key written by openssl-compatible PKCS#8 PEM', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const dir = tempDir();
    writeFileSync(join(dir, IDENTITY_FILE), privateKey.export({ format: 'pem', type: 'pkcs8' }), {
      mode: 0o600,
    });
    assert.equal(loadOrCreateIdentity(dir).id, identityFromPrivateKey(privateKey).id);
  });
  it('writes its key file as node:crypto (OpenSSL) writes the same key, and signs as OpenSSL does', () => {
    const dir = tempDir();
    const identity = loadOrCreateIdentity(dir);
    const pem = readFileSync(join(dir, IDENTITY_FILE), 'utf8');
    const key = createPrivateKey(pem);
    assert.equal(key.export({ format: 'pem', type: 'pkcs8' }), pem, 'byte for byte');
    const raw = createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(-32);
    assert.deepEqual(identity.publicKey, raw);
    const data = Buffer.from('signed by libsodium');
    assert.deepEqual(identity.sign(data), sign(null, data, key), 'Ed25519 is deterministic (RFC 8032)');
    assert.deepEqual(identity.privateKey.export({ format: 'pem', type: 'pkcs8' }), pem, 'its KeyObject');
  });

  it('reads any Ed25519 key OpenSSL writes or reads, as OpenSSL does, and refuses anything else with ERR_IDENTITY_FILE', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const want = identityFromPrivateKey(privateKey).id;
    // As OpenSSL writes it, CRLF lines, no last newline; text before the PEM (read by node:crypto).
    for (const variant of [pem, pem.replaceAll('\n', '\r\n'), `a comment\n${pem}`, pem.trimEnd()]) {
      assert.equal(parseIdentity(variant).id, want, JSON.stringify(variant));
    }
    // Blank lines (after the header, before the footer, inside the body), a body cut in two lines.
    const [head, body, foot] = pem.split('\n') as [string, string, string];
    const layouts = [
      `${head}\n\n${body}\n${foot}\n`,
      `${head}\n${body}\n\n${foot}\n`,
      `${head}\n${body.slice(0, 32)}\n\n${body.slice(32)}\n${foot}\n`,
      `${head}\n${body.slice(0, 32)}\n${body.slice(32)}\n${foot}\n`,
    ];
    // Any text: an identity exactly when node:crypto reads an Ed25519 key from it, else the error.
    const mutated = fc
      .tuple(
        fc.nat(pem.length - 1),
        fc.string({ unit: fc.constantFrom('\n', '\r', ' ', '=', '-', 'A', '+', '/', '\t'), maxLength: 3 }),
      )
      .map(([at, text]) => pem.slice(0, at) + text + pem.slice(at + 1));
    fc.assert(
      fc.property(fc.oneof(mutated, fc.string({ maxLength: 200 }), fc.constantFrom(...layouts)), (text) => {
        let expected: string | undefined;
        try {
          const key = createPrivateKey(text);
          if (key.asymmetricKeyType === 'ed25519') expected = identityFromPrivateKey(key).id;
        } catch {
          expected = undefined;
        }
        if (expected === undefined)
          assert.throws(() => parseIdentity(text), securityError('ERR_IDENTITY_FILE'));
        else assert.equal(parseIdentity(text).id, expected);
      }),
      { numRuns: 300 },
    );
  });
});
