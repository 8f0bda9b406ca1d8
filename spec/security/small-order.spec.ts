import assert from 'node:assert/strict';
import { verify } from 'node:crypto';
import { describe, it } from 'node:test';
import { encodeChat } from '../../lib/protocol/frames.js';
import { chatProblemChecker } from '../../lib/operators/verify.js';
import { generateIdentity, nodeIdOf, publicKeyFromRaw, type Identity } from '../../lib/security/identity.js';
import { networkTag } from '../../lib/security/network-key.js';
import { createHandshake } from '../../lib/security/noise.js';
import { signedChats, verifyBinaryChat, verifyChat, verifyChatInBatch } from '../../lib/security/sign.js';
import { securityError } from './helpers.js';

// A peer that claims an Ed25519 key of small order needs no private key to "sign" for it under a
// cofactorless check that does not refuse such keys (RFC 8032 leaves both to the verifier), which is
// what node:crypto (OpenSSL) does. These specs forge such signatures and check that every place that
// verifies an identity key refuses them: the handshake's identity proof and the chat signatures.

const ff = 'ff'.repeat(30);
/** The canonical encodings of the eight points of order dividing 8 (RFC 8032 encoding, y then x's sign). */
const TORSION = [
  ['identity (order 1)', '01' + '00'.repeat(31)],
  ['y = -1 (order 2)', 'ec' + ff + '7f'],
  ['y = 0 (order 4)', '00'.repeat(32)],
  ['y = 0, x negative (order 4)', '00'.repeat(31) + '80'],
  ['order 8', '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05'],
  ['order 8, x negative', '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85'],
  ['order 8, -y', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a'],
  ['order 8, -y, x negative', 'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa'],
] as const;
/** Non-canonical encodings of some of them: x = 0 with its sign bit set, y = p, y = p + 1. */
const NON_CANONICAL = [
  ['identity, sign bit set', '01' + '00'.repeat(30) + '80'],
  ['y = -1, sign bit set', 'ec' + ff + 'ff'],
  ['y = p (0)', 'ed' + ff + '7f'],
  ['y = p (0), sign bit set', 'ed' + ff + 'ff'],
  ['y = p + 1 (identity)', 'ee' + ff + '7f'],
  ['y = p + 1 (identity), sign bit set', 'ee' + ff + 'ff'],
] as const;
const SMALL_ORDER_KEYS = [...TORSION, ...NON_CANONICAL].map(([name, hex]) => ({
  name,
  key: Buffer.from(hex, 'hex'),
}));
const TORSION_POINTS = TORSION.map(([, hex]) => Buffer.from(hex, 'hex'));

/**
 * A signature of `data` for the small-order key `publicKey`, made with no private key, that
 * node:crypto accepts; undefined when none of the tries is accepted for these bytes. S = 0, so the
 * check is R == -[h]A, a point of small order again: R is tried as each torsion point (and the key's
 * own bytes). For the identity it holds for every message; for the others, for most.
 */
function laxForgery(publicKey: Buffer, data: Buffer): Buffer | undefined {
  let key;
  try {
    key = publicKeyFromRaw(publicKey);
  } catch {
    return undefined; // node:crypto refuses these key bytes
  }
  for (const r of [publicKey, ...TORSION_POINTS]) {
    const signature = Buffer.concat([r, Buffer.alloc(32)]);
    if (verify(null, data, key, signature)) return signature;
  }
  return undefined;
}

/**
 * An identity that claims `publicKey` and holds no private key for it: it "signs" with
 * {@link laxForgery} (all zeros when there is none), and `forged` says whether its last signature
 * was one node:crypto accepts.
 */
function impostor(publicKey: Buffer): { identity: Identity; forged: () => boolean } {
  let forged = false;
  const identity: Identity = {
    ...generateIdentity(), // its private key is never used
    id: nodeIdOf(publicKey),
    publicKey,
    sign: (data) => {
      const signature = laxForgery(publicKey, data);
      forged = signature !== undefined;
      return signature ?? Buffer.alloc(64);
    },
  };
  return { identity, forged: () => forged };
}

/**
 * Whether this runtime's node:crypto takes the forgeries: Node 20's OpenSSL 3.0 takes the identity
 * point's for any message (and one for each of the other keys for most messages); Node 24's refuses
 * them. Where it takes them, each check below must have been sent one it takes, and refused it.
 */
const NODE_CRYPTO_LAX =
  laxForgery(Buffer.from('01' + '00'.repeat(31), 'hex'), Buffer.from('any')) !== undefined;

/**
 * Tries `attempt` (a fresh handshake or message each time) until it has sent a signature that
 * node:crypto accepts, at most `tries` times: each send is checked by the attempt itself. Where
 * node:crypto takes forgeries (see {@link NODE_CRYPTO_LAX}), fails unless one was sent.
 */
function untilForged(what: string, tries: number, attempt: () => boolean): void {
  for (let i = 0; i < tries; i++) if (attempt()) return;
  assert.ok(!NODE_CRYPTO_LAX, `${what}: no forgery node:crypto takes in ${tries} tries`);
}

const honest = generateIdentity();
const net = networkTag();

describe('small-order identity keys, signed for with no private key', () => {
  it('fail the handshake with ERR_IDENTITY when the responder proves one', () => {
    for (const { name, key } of SMALL_ORDER_KEYS) {
      untilForged(name, 200, () => {
        const fake = impostor(key);
        const i = createHandshake({ initiator: true, identity: honest });
        const r = createHandshake({ initiator: false, identity: fake.identity });
        const m2 = r.receive(i.start()!).reply!;
        assert.throws(() => i.receive(m2), securityError('ERR_IDENTITY'), name);
        return fake.forged();
      });
    }
  });

  it('fail the handshake with ERR_IDENTITY when the initiator proves one', () => {
    for (const { name, key } of SMALL_ORDER_KEYS) {
      untilForged(name, 200, () => {
        const fake = impostor(key);
        const i = createHandshake({ initiator: true, identity: fake.identity });
        const r = createHandshake({ initiator: false, identity: honest });
        const m3 = i.receive(r.receive(i.start()!).reply!).reply!;
        assert.throws(() => r.receive(m3), securityError('ERR_IDENTITY'), name);
        return fake.forged();
      });
    }
  });

  it('are refused as the key of a chat message, alone or in a batch, as JSON fields or binary', () => {
    for (const { name, key } of SMALL_ORDER_KEYS) {
      for (const size of [1, 3]) {
        let tries = 0;
        untilForged(name, 200, () => {
          const fake = impostor(key);
          const messages = Array.from({ length: size }, (_, j) => ({
            id: `forged-${tries}-${j}`,
            nick: 'mallory',
            ts: 1_764_079_331_000,
            text: `try ${tries++}`,
            seq: j + 1,
          }));
          const check = chatProblemChecker(net);
          for (const { frame, payload } of signedChats(fake.identity, messages, net)) {
            const what = `${name}, batch of ${size}`;
            const fields = { ...frame, publicKey: key };
            const sig = Buffer.from(frame.sig, 'base64url');
            const valid =
              frame.proof === undefined
                ? verifyChat(fields, sig, net)
                : verifyChatInBatch(fields, frame.proof, sig, net);
            assert.equal(valid, false, what);
            assert.equal(verifyBinaryChat(payload, net), false, what);
            assert.equal(verifyBinaryChat(encodeChat(frame), net), false, what);
            assert.equal(check(frame), 'its signature does not verify', what);
            assert.equal(check(frame, payload), 'its signature does not verify', what);
          }
          return fake.forged();
        });
      }
    }
  });
});
