import assert from 'node:assert/strict';
import { createDecipheriv, createHash, verify } from 'node:crypto';
import { describe, it } from 'node:test';
import NoiseState from 'noise-handshake';
import { generateKeyPair } from 'noise-handshake/dh';
import noiseProtocol from 'noise-protocol';
import { CipherState } from '../../lib/security/cipher.js';
import { generateIdentity, nodeIdOf, publicKeyFromRaw } from '../../lib/security/identity.js';
import { createHandshake, IDENTITY_PROOF_PREFIX, PROLOGUE } from '../../lib/security/noise.js';
import { NNPSK0_BLAKE2B, XX_BLAKE2B, type NoiseVector } from './noise-vectors.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

/**
 * Replays a cacophony vector through noise-handshake (with the vector's fixed keys) and our
 * CipherState: every handshake and transport message must come out byte for byte.
 */
function replay(vector: NoiseVector, pattern: 'XX' | 'NNpsk0'): void {
  const options = vector.psk === undefined ? {} : { psk: hex(vector.psk) };
  const staticOf = (key: string | undefined): NoiseState.KeyPair | null =>
    key === undefined ? null : generateKeyPair(hex(key));
  const initiator = new NoiseState(pattern, true, staticOf(vector.initStatic), options);
  const responder = new NoiseState(pattern, false, staticOf(vector.respStatic), options);
  initiator.initialise(hex(vector.prologue));
  responder.initialise(hex(vector.prologue));
  initiator.e = generateKeyPair(hex(vector.initEphemeral));
  responder.e = generateKeyPair(hex(vector.respEphemeral));
  const rounds = pattern === 'XX' ? 3 : 2;
  for (let n = 0; n < rounds; n++) {
    const [sender, receiver] = n % 2 === 0 ? [initiator, responder] : [responder, initiator];
    const { payload, ciphertext } = vector.messages[n]!;
    const message = sender.send(hex(payload));
    assert.equal(message.toString('hex'), ciphertext, `handshake message ${n}`);
    assert.equal(receiver.recv(message).toString('hex'), payload);
  }
  assert.ok(initiator.complete && responder.complete);
  assert.ok(initiator.hash!.equals(responder.hash!));
  const send = { initiator: new CipherState(initiator.tx!), responder: new CipherState(responder.tx!) };
  const recv = { initiator: new CipherState(initiator.rx!), responder: new CipherState(responder.rx!) };
  for (let n = rounds; n < vector.messages.length; n++) {
    const [from, to] =
      n % 2 === 0 ? (['initiator', 'responder'] as const) : (['responder', 'initiator'] as const);
    const { payload, ciphertext } = vector.messages[n]!;
    assert.equal(send[from].encrypt(hex(payload)).toString('hex'), ciphertext, `transport message ${n}`);
    assert.equal(recv[to].decrypt(hex(ciphertext)).toString('hex'), payload);
  }
}

/** The Noise handshake hash h after the given wire pieces, computed with node:crypto alone. */
function transcriptHash(protocol: string, pieces: readonly Buffer[]): Buffer {
  let h = Buffer.alloc(64);
  Buffer.from(protocol).copy(h); // names of at most 64 bytes are zero-padded, not hashed
  for (const piece of [PROLOGUE, ...pieces]) h = createHash('blake2b512').update(h).update(piece).digest();
  return h;
}

/** Decrypts a transport message with node:crypto's ChaCha20-Poly1305 (Noise nonce, no AD). */
function openWithNodeCrypto(key: Uint8Array, counter: number, sealed: Buffer): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32LE(counter, 4);
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  decipher.setAuthTag(sealed.subarray(-16));
  return Buffer.concat([decipher.update(sealed.subarray(0, -16)), decipher.final()]);
}

describe('Noise interoperability', () => {
  it('noise-handshake and our CipherState reproduce the Noise_XX_25519_ChaChaPoly_BLAKE2b vector', () => {
    replay(XX_BLAKE2B, 'XX');
  });

  it('noise-handshake and our CipherState reproduce the Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b vector (psk0)', () => {
    replay(NNPSK0_BLAKE2B, 'NNpsk0');
  });

  it('our initiator completes a handshake with noise-protocol (emilbayes) as responder', () => {
    const alice = generateIdentity();
    const bob = generateIdentity();
    const protocol = 'Noise_XX_25519_ChaChaPoly_BLAKE2b';
    const ours = createHandshake({ initiator: true, identity: alice });
    const bobStatic = noiseProtocol.keygen();
    const theirs = noiseProtocol.initialize('XX', false, PROLOGUE, bobStatic);

    const m1 = ours.start()!;
    const payload1 = Buffer.alloc(64);
    assert.equal(noiseProtocol.readMessage(theirs, m1, payload1), undefined);
    assert.equal(noiseProtocol.readMessage.bytes, 0);
    // Bob's identity proof, built by hand from the specification in lib/security/noise.ts.
    const h1 = transcriptHash(protocol, [m1, Buffer.alloc(0)]);
    const signed = Buffer.concat([IDENTITY_PROOF_PREFIX, Buffer.of(2), bobStatic.publicKey, h1]);
    const proof = Buffer.concat([Buffer.of(1), bob.publicKey, bob.sign(signed)]);
    const m2 = Buffer.alloc(512);
    noiseProtocol.writeMessage(theirs, proof, m2);
    const step = ours.receive(m2.subarray(0, noiseProtocol.writeMessage.bytes));
    assert.equal(step.session!.remoteId, bob.id);

    const payload3 = Buffer.alloc(512);
    const split = noiseProtocol.readMessage(theirs, step.reply!, payload3)!;
    const aliceProof = payload3.subarray(0, noiseProtocol.readMessage.bytes);
    assert.equal(aliceProof.length, 97);
    assert.equal(nodeIdOf(aliceProof.subarray(1, 33)), alice.id);
    const m2Wire = m2.subarray(0, noiseProtocol.writeMessage.bytes);
    const h2 = transcriptHash(protocol, [
      m1,
      Buffer.alloc(0),
      m2Wire.subarray(0, 32),
      m2Wire.subarray(32, 80),
      m2Wire.subarray(80),
    ]);
    const aliceSigned = Buffer.concat([IDENTITY_PROOF_PREFIX, Buffer.of(1), remoteStaticOf(theirs), h2]);
    assert.ok(
      verify(null, aliceSigned, publicKeyFromRaw(aliceProof.subarray(1, 33)), aliceProof.subarray(33)),
    );

    // Transport: noise-protocol's split keys, node:crypto's AEAD.
    const sealed = step.session!.encrypt(Buffer.from('hello bob'));
    assert.equal(openWithNodeCrypto(split.rx.subarray(0, 32), 0, sealed).toString(), 'hello bob');
    noiseProtocol.destroy(theirs);
  });

  it('our responder completes a handshake with noise-protocol (emilbayes) as initiator', () => {
    const alice = generateIdentity();
    const bob = generateIdentity();
    const protocol = 'Noise_XX_25519_ChaChaPoly_BLAKE2b';
    const aliceStatic = noiseProtocol.keygen();
    const theirs = noiseProtocol.initialize('XX', true, PROLOGUE, aliceStatic);
    const ours = createHandshake({ initiator: false, identity: bob });

    const m1 = Buffer.alloc(64);
    noiseProtocol.writeMessage(theirs, Buffer.alloc(0), m1);
    const m1Wire = m1.subarray(0, noiseProtocol.writeMessage.bytes);
    const m2 = ours.receive(m1Wire).reply!;
    const payload2 = Buffer.alloc(512);
    noiseProtocol.readMessage(theirs, m2, payload2);
    const bobProof = payload2.subarray(0, noiseProtocol.readMessage.bytes);
    assert.equal(nodeIdOf(bobProof.subarray(1, 33)), bob.id);

    const h2 = transcriptHash(protocol, [
      m1Wire,
      Buffer.alloc(0),
      m2.subarray(0, 32),
      m2.subarray(32, 80),
      m2.subarray(80),
    ]);
    const signed = Buffer.concat([IDENTITY_PROOF_PREFIX, Buffer.of(1), aliceStatic.publicKey, h2]);
    const proof = Buffer.concat([Buffer.of(1), alice.publicKey, alice.sign(signed)]);
    const m3 = Buffer.alloc(512);
    const split = noiseProtocol.writeMessage(theirs, proof, m3)!;
    const { session } = ours.receive(m3.subarray(0, noiseProtocol.writeMessage.bytes));
    assert.equal(session!.remoteId, alice.id);

    const sealed = session!.encrypt(Buffer.from('hello alice'));
    assert.equal(openWithNodeCrypto(split.rx.subarray(0, 32), 0, sealed).toString(), 'hello alice');
    noiseProtocol.destroy(theirs);
  });
});

/** The remote static key noise-protocol learned (its state keeps it as `rs`). */
function remoteStaticOf(state: { readonly rs: Uint8Array | null }): Uint8Array {
  assert.ok(state.rs !== null);
  return state.rs;
}
