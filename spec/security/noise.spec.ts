import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { generateIdentity, type Identity } from '../../lib/security/identity.js';
import { generateNetworkKey } from '../../lib/security/network-key.js';
import {
  createHandshake,
  HANDSHAKE_MESSAGE_BYTES,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  type Handshake,
  type HandshakeOptions,
  type SecureSession,
} from '../../lib/security/noise.js';
import { assertSecurityError, securityError } from './helpers.js';

const alice = generateIdentity();
const bob = generateIdentity();

type Side = Omit<HandshakeOptions, 'initiator'>;

interface Pair {
  readonly initiator: SecureSession;
  readonly responder: SecureSession;
  readonly messages: readonly Buffer[];
}

/** Runs a whole handshake in memory, `tamper` applied to each message on the way. */
function handshake(
  initiator: Side = { identity: alice },
  responder: Side = { identity: bob },
  tamper: (message: Buffer, index: number) => Buffer = (m) => m,
): Pair {
  const i = createHandshake({ ...initiator, initiator: true });
  const r = createHandshake({ ...responder, initiator: false });
  assert.equal(r.start(), undefined);
  const m1 = tamper(i.start()!, 0);
  const m2 = tamper(r.receive(m1).reply!, 1);
  const step = i.receive(m2);
  const m3 = tamper(step.reply!, 2);
  const last = r.receive(m3);
  assert.equal(last.reply, undefined);
  return { initiator: step.session!, responder: last.session!, messages: [m1, m2, m3] };
}

/** A responder that has answered a first message, and that answer. */
function respondedTo(options: Side = { identity: bob }): {
  i: Handshake;
  r: Handshake;
  m1: Buffer;
  m2: Buffer;
} {
  const i = createHandshake({
    identity: alice,
    initiator: true,
    ...(options.networkKey ? { networkKey: options.networkKey } : {}),
  });
  const r = createHandshake({ ...options, initiator: false });
  const m1 = i.start()!;
  const m2 = r.receive(m1).reply!;
  return { i, r, m1, m2 };
}

function flipBit(bytes: Buffer, bit: number): Buffer {
  const out = Buffer.from(bytes);
  const index = Math.floor(bit / 8) % out.length;
  out[index] = out[index]! ^ (1 << (bit % 8));
  return out;
}

describe('Noise XX handshake', () => {
  it('completes between two sides, and each learns the other id', () => {
    const { initiator, responder, messages } = handshake();
    assert.equal(initiator.remoteId, bob.id);
    assert.ok(initiator.remotePublicKey.equals(bob.publicKey));
    assert.equal(responder.remoteId, alice.id);
    assert.ok(responder.remotePublicKey.equals(alice.publicKey));
    assert.ok(initiator.handshakeHash.equals(responder.handshakeHash));
    assert.equal(initiator.handshakeHash.length, 64);
    assert.deepEqual(
      messages.map((m) => m.length),
      [HANDSHAKE_MESSAGE_BYTES.first, HANDSHAKE_MESSAGE_BYTES.second, HANDSHAKE_MESSAGE_BYTES.third],
    );
    assert.ok(messages.every((m) => m.length <= MAX_HANDSHAKE_MESSAGE_BYTES));
  });

  it('completes as XXpsk0 when both sides hold the same network key', () => {
    const networkKey = generateNetworkKey();
    const { initiator, responder, messages } = handshake(
      { identity: alice, networkKey },
      { identity: bob, networkKey },
    );
    assert.equal(initiator.remoteId, bob.id);
    assert.equal(responder.remoteId, alice.id);
    assert.equal(messages[0]!.length, HANDSHAKE_MESSAGE_BYTES.firstWithNetworkKey);
  });

  it('gives each session its own keys and hash', () => {
    const one = handshake();
    const two = handshake();
    assert.ok(!one.initiator.handshakeHash.equals(two.initiator.handshakeHash));
    const sealed = one.initiator.encrypt(Buffer.from('x'));
    assert.throws(() => two.responder.decrypt(sealed), securityError('ERR_DECRYPT'));
  });

  it("never changes the caller's message buffers", () => {
    const i = createHandshake({ initiator: true, identity: alice });
    const r = createHandshake({ initiator: false, identity: bob });
    const m1 = i.start()!;
    const m1Copy = Buffer.from(m1);
    const m2 = r.receive(m1).reply!;
    const m2Copy = Buffer.from(m2);
    const m3 = i.receive(m2).reply!;
    const m3Copy = Buffer.from(m3);
    r.receive(m3);
    assert.ok(m1.equals(m1Copy) && m2.equals(m2Copy) && m3.equals(m3Copy));
  });

  it('sends the identities only encrypted: no identity key appears in the clear', () => {
    const { messages } = handshake();
    for (const m of messages) {
      assert.equal(m.indexOf(alice.publicKey), -1);
      assert.equal(m.indexOf(bob.publicKey), -1);
    }
  });
});

describe('secure session', () => {
  it('round-trips messages both ways, in order', () => {
    const { initiator, responder } = handshake();
    for (let n = 0; n < 50; n++) {
      const text = Buffer.from(`message ${n} ${'x'.repeat(n * 7)}`);
      const sealed = initiator.encrypt(text);
      assert.equal(sealed.length, text.length + 16);
      assert.ok(!sealed.subarray(0, text.length).equals(text));
      assert.ok(responder.decrypt(sealed).equals(text));
      assert.ok(initiator.decrypt(responder.encrypt(text)).equals(text));
    }
    assert.equal(responder.decrypt(initiator.encrypt(Buffer.alloc(0))).length, 0);
  });

  it('encrypts into a given buffer as encrypt does, in the same nonce order, and refuses a wrong size', () => {
    const { initiator, responder } = handshake();
    const room = new Uint8Array(64); // a batch with other bytes around the sealed message
    const text = Buffer.from('into a batch');
    initiator.encryptInto(room.subarray(10, 10 + text.length + 16), text);
    assert.ok(responder.decrypt(room.subarray(10, 10 + text.length + 16)).equals(text));
    assert.deepEqual([...room.subarray(0, 10)], Array(10).fill(0), 'nothing written before it');
    assert.ok(
      room.subarray(10 + text.length + 16).every((b) => b === 0),
      'nor after it',
    );
    // Mixed with encrypt(): one counter.
    assert.ok(responder.decrypt(initiator.encrypt(text)).equals(text));
    const out = new Uint8Array(text.length + 16);
    initiator.encryptInto(out, text);
    assert.ok(responder.decrypt(out).equals(text));
    assert.throws(() => initiator.encryptInto(new Uint8Array(text.length + 15), text), RangeError);
    assert.throws(() => initiator.encryptInto(new Uint8Array(text.length + 17), text), RangeError);
  });

  it('decrypts in place as decrypt does, in the same nonce order, and fails a tampered message', () => {
    const { initiator, responder } = handshake();
    const text = Buffer.from('decrypted where it lies');
    const sealed = initiator.encrypt(text);
    const plain = responder.decryptInPlace(sealed);
    assert.ok(plain.equals(text));
    assert.equal(plain.buffer, sealed.buffer, 'a view of the ciphertext, not a copy');
    assert.equal(plain.byteOffset, sealed.byteOffset);
    assert.ok(responder.decrypt(initiator.encrypt(text)).equals(text), 'one counter with decrypt');
    const tampered = initiator.encrypt(text);
    tampered[3]! ^= 1;
    assert.throws(() => responder.decryptInPlace(tampered), { code: 'ERR_DECRYPT' });
  });

  it('carries a message of the largest size, and refuses a larger one with a RangeError', () => {
    const { initiator, responder } = handshake(
      { identity: alice, maxMessageBytes: 70_000 },
      { identity: bob, maxMessageBytes: 70_000 },
    );
    const big = Buffer.alloc(70_000, 7);
    assert.ok(responder.decrypt(initiator.encrypt(big)).equals(big));
    assert.throws(() => initiator.encrypt(Buffer.alloc(70_001)), RangeError);
  });

  it('rejects a transport message with a flipped bit with ERR_DECRYPT, and stays failed', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat(), (bytes, bit) => {
        const { initiator, responder } = handshake();
        const sealed = initiator.encrypt(bytes);
        assert.throws(
          () => responder.decrypt(flipBit(sealed, bit % (sealed.length * 8))),
          securityError('ERR_DECRYPT'),
        );
        assert.throws(
          () => responder.decrypt(sealed),
          securityError('ERR_DECRYPT'),
          'a session that failed once stays failed',
        );
      }),
      { numRuns: 50 },
    );
  });

  it('rejects a replayed, reordered or truncated message with ERR_DECRYPT', () => {
    const replay = handshake();
    const first = replay.initiator.encrypt(Buffer.from('one'));
    replay.responder.decrypt(first);
    assert.throws(() => replay.responder.decrypt(first), securityError('ERR_DECRYPT'));

    const reorder = handshake();
    const a = reorder.initiator.encrypt(Buffer.from('a'));
    const b = reorder.initiator.encrypt(Buffer.from('b'));
    assert.throws(() => reorder.responder.decrypt(b), securityError('ERR_DECRYPT'));
    void a;

    const truncate = handshake();
    assert.throws(() => truncate.responder.decrypt(Buffer.alloc(15)), securityError('ERR_DECRYPT'));
    const own = handshake();
    assert.throws(
      () => own.initiator.decrypt(own.initiator.encrypt(Buffer.from('echo'))),
      securityError('ERR_DECRYPT'),
    );
  });

  it('gives only ERR_DECRYPT for arbitrary bytes (property)', () => {
    const { responder } = handshake();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const { responder: fresh } = handshake();
        assert.throws(() => fresh.decrypt(bytes), securityError('ERR_DECRYPT'));
        assert.throws(() => responder.decrypt(bytes), securityError('ERR_DECRYPT'));
      }),
      { numRuns: 100 },
    );
  });
});

describe('network key', () => {
  it('fails a wrong key on the responder at the first message, before it reveals anything', () => {
    const i = createHandshake({ initiator: true, identity: alice, networkKey: generateNetworkKey() });
    const r = createHandshake({ initiator: false, identity: bob, networkKey: generateNetworkKey() });
    assert.throws(() => r.receive(i.start()!), securityError('ERR_NETWORK_KEY', /network key mismatch/));
    // The responder closes the connection; that is all the initiator sees.
    assert.throws(
      () => {
        throw i.closedError();
      },
      securityError('ERR_NETWORK_KEY', /network key mismatch/),
    );
  });

  it('fails when only the responder has a key, on both sides', () => {
    const i = createHandshake({ initiator: true, identity: alice });
    const r = createHandshake({ initiator: false, identity: bob, networkKey: generateNetworkKey() });
    assert.throws(() => r.receive(i.start()!), securityError('ERR_NETWORK_KEY', /peer has no network key/));
    assert.equal(i.closedError().code, 'ERR_NETWORK_KEY');
  });

  it('fails when only the initiator has a key, on both sides', () => {
    const i = createHandshake({ initiator: true, identity: alice, networkKey: generateNetworkKey() });
    const r = createHandshake({ initiator: false, identity: bob });
    assert.throws(() => r.receive(i.start()!), securityError('ERR_NETWORK_KEY', /this node has none/));
    assert.equal(i.closedError().code, 'ERR_NETWORK_KEY');
  });

  it('reports a close at any other point of the handshake as ERR_HANDSHAKE', () => {
    const { r } = respondedTo();
    assert.equal(r.closedError().code, 'ERR_HANDSHAKE', 'responder waiting for the third message');
    assert.equal(createHandshake({ initiator: false, identity: bob }).closedError().code, 'ERR_HANDSHAKE');
    const failed = createHandshake({ initiator: true, identity: alice });
    failed.start();
    assert.throws(() => failed.receive(Buffer.alloc(3)), securityError('ERR_HANDSHAKE'));
    assert.equal(
      failed.closedError().code,
      'ERR_HANDSHAKE',
      'a failed handshake reports its own error, not a mismatch',
    );
  });

  it('rejects a network key of the wrong size with a RangeError', () => {
    assert.throws(
      () => createHandshake({ initiator: true, identity: alice, networkKey: Buffer.alloc(16) }),
      RangeError,
    );
    assert.throws(
      () => createHandshake({ initiator: true, identity: alice, maxMessageBytes: -1 }),
      RangeError,
    );
  });
});

describe('identity proof', () => {
  it('fails with ERR_IDENTITY when the responder cannot sign for the key it claims', () => {
    const impostor: Identity = { ...bob, sign: (data) => alice.sign(data) };
    const i = createHandshake({ initiator: true, identity: alice });
    const r = createHandshake({ initiator: false, identity: impostor });
    const m2 = r.receive(i.start()!).reply!;
    assert.throws(() => i.receive(m2), securityError('ERR_IDENTITY'));
  });

  it('fails with ERR_IDENTITY when the initiator cannot sign for the key it claims', () => {
    const impostor: Identity = { ...alice, sign: () => Buffer.alloc(64) };
    const i = createHandshake({ initiator: true, identity: impostor });
    const r = createHandshake({ initiator: false, identity: bob });
    const m3 = i.receive(r.receive(i.start()!).reply!).reply!;
    assert.throws(() => r.receive(m3), securityError('ERR_IDENTITY'));
  });

  it('binds the proof to the session transcript and to the Noise static key', () => {
    // A proof signed over another transcript (a proof replayed from another session) or another
    // static key (a proof lifted onto a man-in-the-middle's key) fails.
    const otherTranscript: Identity = {
      ...bob,
      sign: (data) => bob.sign(Buffer.concat([data.subarray(0, -64), Buffer.alloc(64)])),
    };
    const otherStatic: Identity = {
      ...bob,
      sign: (data) =>
        bob.sign(Buffer.concat([data.subarray(0, -96), Buffer.alloc(32, 1), data.subarray(-64)])),
    };
    for (const responder of [otherTranscript, otherStatic]) {
      const i = createHandshake({ initiator: true, identity: alice });
      const r = createHandshake({ initiator: false, identity: responder });
      assert.throws(() => i.receive(r.receive(i.start()!).reply!), securityError('ERR_IDENTITY'));
    }
  });

  it('lets a dialler refuse an unexpected peer before revealing its own identity', () => {
    const i = createHandshake({ initiator: true, identity: alice, expectedRemoteId: generateIdentity().id });
    const r = createHandshake({ initiator: false, identity: bob });
    const m2 = r.receive(i.start()!).reply!;
    assert.throws(() => i.receive(m2), securityError('ERR_UNEXPECTED_PEER', new RegExp(bob.id)));
    assert.equal(handshake({ identity: alice, expectedRemoteId: bob.id }).initiator.remoteId, bob.id);
  });
});

describe('bad handshake messages', () => {
  it('rejects an all-zero (low-order) ephemeral key with ERR_HANDSHAKE', () => {
    const r = createHandshake({ initiator: false, identity: bob });
    assert.throws(() => r.receive(Buffer.alloc(32)), securityError('ERR_HANDSHAKE'));
  });

  it('rejects a first message of the wrong size with ERR_HANDSHAKE', () => {
    for (const size of [0, 1, 31, 33, 47, 49, 200]) {
      const r = createHandshake({ initiator: false, identity: bob });
      assert.throws(() => r.receive(Buffer.alloc(size, 9)), securityError('ERR_HANDSHAKE'), `size ${size}`);
    }
  });

  it('fails, with typed errors only, when any bit of any handshake message is flipped (property)', () => {
    fc.assert(
      fc.property(fc.nat(2), fc.nat(), fc.boolean(), (which, bit, withKey) => {
        const networkKey = withKey ? { networkKey: generateNetworkKey() } : {};
        try {
          handshake({ identity: alice, ...networkKey }, { identity: bob, ...networkKey }, (m, index) =>
            index === which ? flipBit(m, bit % (m.length * 8)) : m,
          );
        } catch (err) {
          assertSecurityError(err);
          return;
        }
        assert.fail('a handshake with a flipped bit completed');
      }),
      { numRuns: 300 },
    );
  });

  const garbage = fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.constantFrom(32, 48, 161, 193).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
  );

  it('gives only SecurityErrors for arbitrary bytes at every step (property)', () => {
    fc.assert(
      fc.property(garbage, fc.boolean(), (bytes, withKey) => {
        const networkKey = withKey ? { networkKey: generateNetworkKey() } : {};
        const attempts: (() => unknown)[] = [
          () => createHandshake({ initiator: false, identity: bob, ...networkKey }).receive(bytes),
          () => {
            const i = createHandshake({ initiator: true, identity: alice, ...networkKey });
            i.start();
            return i.receive(bytes);
          },
          () => respondedTo({ identity: bob, ...networkKey }).r.receive(bytes),
        ];
        for (const attempt of attempts) {
          try {
            attempt();
          } catch (err) {
            assertSecurityError(err);
            continue;
          }
          // Random bytes may pass as a first message in XX: it is only an ephemeral key.
          assert.ok(!withKey && bytes.length === 32 && attempt === attempts[0], 'garbage was accepted');
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('handshake misuse', () => {
  it('throws TypeErrors for calls out of order', () => {
    const i = createHandshake({ initiator: true, identity: alice });
    assert.throws(() => i.receive(Buffer.alloc(193)), TypeError, 'receive before start');
    const r = createHandshake({ initiator: false, identity: bob });
    const m2 = r.receive(i.start()!).reply!;
    assert.throws(() => i.start(), TypeError, 'start twice');
    const m3 = i.receive(m2).reply!;
    assert.ok(i.done);
    assert.throws(() => i.receive(m2), TypeError, 'receive after completion');
    r.receive(m3);
    assert.ok(r.done);
    assert.throws(() => r.receive(m3), TypeError, 'receive after completion');
  });

  it('fails every later message once a handshake failed', () => {
    const r = createHandshake({ initiator: false, identity: bob });
    assert.throws(() => r.receive(Buffer.alloc(5)), securityError('ERR_HANDSHAKE'));
    const good = createHandshake({ initiator: true, identity: alice }).start()!;
    assert.throws(() => r.receive(good), securityError('ERR_HANDSHAKE', /failed already/));
  });
});
