import { Buffer } from 'node:buffer';
import NoiseState from 'noise-handshake';
import { checkMaxMessageBytes, CipherState, DEFAULT_MAX_MESSAGE_BYTES } from './cipher.js';
import { SecurityError, wrapFailure } from './errors.js';
import { PUBLIC_KEY_BYTES, SIGNATURE_BYTES, nodeIdOf, type Identity } from './identity.js';
import { NETWORK_KEY_BYTES } from './network-key.js';
import { sodium } from './sodium.js';

/**
 * The handshake runs `Noise_XX_25519_ChaChaPoly_BLAKE2b`, or `Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b`
 * when a network key is set (the key is the PSK), through `noise-handshake` (Holepunch). BLAKE2b is the
 * only hash that library implements.
 *
 * ```
 *   -> [psk,] e                      msg 1: 32 bytes (48 with a network key: the empty payload's tag)
 *   <- e, ee, s, es  + proof(R)      msg 2: 193 bytes
 *   -> s, se         + proof(I)      msg 3: 161 bytes
 * ```
 *
 * The Noise static keys are fresh X25519 keys for each handshake. Each side proves that it holds its
 * Ed25519 identity key with a payload, encrypted by Noise, of
 * `version (1) || identity public key (32) || Ed25519 signature (64)` over
 * `IDENTITY_PROOF_PREFIX || role || its Noise static key || handshake hash before its message`.
 * The hash covers both ephemeral keys, so a proof is bound to this one session (channel binding) and
 * cannot be replayed into another; the static key ties the proof to the key Noise authenticates.
 * The signature is checked with libsodium's strict verification, as chat signatures are: a
 * small-order identity key (for which a signature can be made without a private key), a small-order
 * R, or a non-canonical key or S fails the proof.
 */
export const NOISE_PROTOCOL = 'Noise_XX_25519_ChaChaPoly_BLAKE2b';
export const NOISE_PROTOCOL_PSK = 'Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b';

/** Noise prologue: both sides must use the same, so it pins the application protocol and version. */
export const PROLOGUE = Buffer.from('p2p-chat-v1\0noise', 'utf8');
/** Domain separation of the identity proof signatures. */
export const IDENTITY_PROOF_PREFIX = Buffer.from('p2p-chat-v1\0noise-identity\0', 'utf8');
/** Version byte at the start of the identity payload. Append-only. */
const PROOF_VERSION = 1;
const PROOF_BYTES = 1 + PUBLIC_KEY_BYTES + SIGNATURE_BYTES;
/** Role bytes inside the signed proof, so the initiator's proof can never pass as the responder's. */
const ROLE_INITIATOR = 1;
const ROLE_RESPONDER = 2;

const DH_BYTES = 32;
const TAG_BYTES = 16;
/** Exact sizes of the three handshake messages. */
export const HANDSHAKE_MESSAGE_BYTES = {
  first: DH_BYTES,
  firstWithNetworkKey: DH_BYTES + TAG_BYTES,
  second: DH_BYTES + (DH_BYTES + TAG_BYTES) + (PROOF_BYTES + TAG_BYTES),
  third: DH_BYTES + TAG_BYTES + (PROOF_BYTES + TAG_BYTES),
} as const;
/** The largest handshake message: a frame decoder may use it as its limit until the handshake is done. */
export const MAX_HANDSHAKE_MESSAGE_BYTES = HANDSHAKE_MESSAGE_BYTES.second;

/** Options of {@link createHandshake}. */
export interface HandshakeOptions {
  /** True on the side that opened the connection (it sends the first message). */
  readonly initiator: boolean;
  /** This node's identity, proven to the peer. */
  readonly identity: Identity;
  /** The 32-byte network key: only nodes holding the same key complete the handshake. */
  readonly networkKey?: Uint8Array;
  /**
   * The node id this side expects to reach (a dialled peer whose id is known). A different proven id
   * fails the handshake; the initiator checks it before it reveals its own identity.
   */
  readonly expectedRemoteId?: string;
  /** Largest plaintext of one transport message. Default {@link DEFAULT_MAX_MESSAGE_BYTES}. */
  readonly maxMessageBytes?: number;
}

/** An authenticated, encrypted session with one peer, the result of a completed handshake. */
export interface SecureSession {
  /** The peer's node id, `nodeIdOf(remotePublicKey)`. */
  readonly remoteId: string;
  /** The peer's raw 32-byte Ed25519 identity key, proven in the handshake. */
  readonly remotePublicKey: Buffer;
  /** The final Noise handshake hash (64 bytes), the same on both sides: a unique session id. */
  readonly handshakeHash: Buffer;
  /** True when this side sent the first handshake message. */
  readonly initiator: boolean;
  /** Largest plaintext {@link SecureSession.encrypt} takes. */
  readonly maxMessageBytes: number;
  /**
   * Encrypts the next outgoing message (plaintext + 16 bytes). Messages must reach the peer in order.
   * @throws {RangeError} when `plaintext` is larger than `maxMessageBytes`.
   */
  encrypt(plaintext: Uint8Array): Buffer;
  /**
   * Encrypts the next outgoing message into `out`, exactly `plaintext.length + 16` bytes (see
   * {@link CipherState.encryptInto}).
   * @throws {RangeError} when `plaintext` is larger than `maxMessageBytes`, or `out` another size.
   */
  encryptInto(out: Uint8Array, plaintext: Uint8Array): void;
  /**
   * Decrypts the next incoming message.
   * @throws {SecurityError} `ERR_DECRYPT` for a tampered, truncated, replayed or reordered message;
   *   every later call throws too.
   */
  decrypt(ciphertext: Uint8Array): Buffer;
  /**
   * Decrypts the next incoming message in place: the plaintext overwrites the start of `ciphertext`
   * and is returned as a view of it. Fails as {@link decrypt}.
   */
  decryptInPlace(ciphertext: Buffer): Buffer;
}

/** What one handshake message produced: a message to send back, and the session once complete. */
export interface HandshakeStep {
  /** Send this to the peer (before using the session). */
  readonly reply: Buffer | undefined;
  /** Set when the handshake is complete. */
  readonly session: SecureSession | undefined;
}

/**
 * One side of a handshake, fed the peer's handshake messages one at a time. Transport-agnostic: each
 * message travels as one frame.
 *
 * @example
 * const handshake = createHandshake({ initiator: true, identity, networkKey });
 * const first = handshake.start();               // initiator: the first message; responder: undefined
 * if (first) sendFrame(first);
 * // for each frame received while the handshake runs:
 * const { reply, session } = handshake.receive(frame);   // throws SecurityError on any failure
 * if (reply) sendFrame(reply);
 * if (session) ...;                              // later frames: session.encrypt / session.decrypt
 * // when the connection ends before `session`: log handshake.closedError()
 */
export interface Handshake {
  readonly initiator: boolean;
  /** True once the session was returned. */
  readonly done: boolean;
  /**
   * Starts the handshake: the initiator's first message, or undefined on the responder.
   * @throws {TypeError} when called twice.
   */
  start(): Buffer | undefined;
  /**
   * Takes the peer's next handshake message.
   * @throws {SecurityError} `ERR_HANDSHAKE`, `ERR_NETWORK_KEY`, `ERR_IDENTITY` or `ERR_UNEXPECTED_PEER`;
   *   the handshake is failed after, and the connection should be closed.
   * @throws {TypeError} when called before `start()` on the initiator, or after completion.
   */
  receive(message: Uint8Array): HandshakeStep;
  /**
   * The error to report when the connection ends before the handshake completes. An initiator whose
   * first message got no answer gets `ERR_NETWORK_KEY`: a responder closes without a word when the
   * first message shows another network (it cannot answer without revealing itself, and an answer
   * would not be authenticated anyway). Otherwise `ERR_HANDSHAKE`.
   */
  closedError(): SecurityError;
}

type Phase = 'new' | 'awaiting-second' | 'awaiting-first' | 'awaiting-third' | 'done' | 'failed';

/**
 * Creates one side of a handshake. See {@link Handshake} for the flow.
 * @throws {RangeError} when `networkKey` is not 32 bytes or `maxMessageBytes` is invalid.
 */
export function createHandshake(options: HandshakeOptions): Handshake {
  return new NoiseHandshake(options);
}

function handshakeError(message: string): SecurityError {
  return new SecurityError('ERR_HANDSHAKE', message);
}

function networkKeyError(message: string): SecurityError {
  return new SecurityError('ERR_NETWORK_KEY', `network key mismatch: ${message}`);
}

class NoiseHandshake implements Handshake {
  readonly initiator: boolean;
  private readonly identity: Identity;
  private readonly withNetworkKey: boolean;
  private readonly expectedRemoteId: string | undefined;
  private readonly maxMessageBytes: number;
  private readonly noise: NoiseState;
  private phase: Phase;
  /** The handshake hash the peer's next identity proof must cover. */
  private transcript: Buffer | undefined;

  constructor(options: HandshakeOptions) {
    const { networkKey } = options;
    if (networkKey !== undefined && networkKey.length !== NETWORK_KEY_BYTES) {
      throw new RangeError(`a network key is ${NETWORK_KEY_BYTES} bytes, got ${networkKey.length}`);
    }
    const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    checkMaxMessageBytes(maxMessageBytes); // now, not when the handshake completes
    this.initiator = options.initiator;
    this.identity = options.identity;
    this.withNetworkKey = networkKey !== undefined;
    this.expectedRemoteId = options.expectedRemoteId;
    this.maxMessageBytes = maxMessageBytes;
    this.noise =
      networkKey === undefined
        ? new NoiseState('XX', this.initiator, null)
        : new NoiseState('XXpsk0', this.initiator, null, { psk: Buffer.from(networkKey) });
    this.noise.initialise(PROLOGUE);
    this.phase = this.initiator ? 'new' : 'awaiting-first';
  }

  get done(): boolean {
    return this.phase === 'done';
  }

  start(): Buffer | undefined {
    if (!this.initiator) return undefined;
    if (this.phase !== 'new') throw new TypeError('Handshake.start() was called already');
    const first = this.noise.send();
    this.transcript = this.noise.getHandshakeHash();
    this.phase = 'awaiting-second';
    return first;
  }

  receive(message: Uint8Array): HandshakeStep {
    // noise-handshake keeps views into the message it reads and wipes them when it completes: it
    // always gets a copy (Buffer.from below), so the caller's buffer is never changed.
    const phase = this.phase;
    if (phase === 'new')
      throw new TypeError('Handshake.start() must be called before receive() on the initiator');
    if (phase === 'done') throw new TypeError('the handshake is complete: use the session');
    if (phase === 'failed') throw handshakeError('the handshake failed already');
    try {
      if (phase === 'awaiting-first') return this.onFirst(message);
      if (phase === 'awaiting-second') return this.onSecond(message);
      return this.onThird(message);
    } catch (err) {
      this.phase = 'failed';
      throw err;
    }
  }

  closedError(): SecurityError {
    if (this.phase === 'awaiting-second') {
      return networkKeyError(
        'the peer closed the connection without answering the first handshake message ' +
          '(or it does not speak this protocol)',
      );
    }
    return handshakeError('the peer closed the connection during the handshake');
  }

  /** Responder: `-> [psk,] e`, answered with `<- e, ee, s, es` and our proof. */
  private onFirst(message: Uint8Array): HandshakeStep {
    const expected = this.withNetworkKey
      ? HANDSHAKE_MESSAGE_BYTES.firstWithNetworkKey
      : HANDSHAKE_MESSAGE_BYTES.first;
    if (message.length !== expected) {
      if (this.withNetworkKey && message.length === HANDSHAKE_MESSAGE_BYTES.first) {
        throw networkKeyError('the peer has no network key, this node has one');
      }
      if (!this.withNetworkKey && message.length === HANDSHAKE_MESSAGE_BYTES.firstWithNetworkKey) {
        throw networkKeyError('the peer uses a network key, this node has none');
      }
      throw handshakeError(`first handshake message of ${message.length} bytes, expected ${expected}`);
    }
    const payload = this.withNetworkKey
      ? wrapFailure(
          'ERR_NETWORK_KEY',
          "network key mismatch: the peer's first message is for another network",
          () => this.noise.recv(Buffer.from(message)),
        )
      : wrapFailure('ERR_HANDSHAKE', 'first handshake message rejected', () =>
          this.noise.recv(Buffer.from(message)),
        );
    if (payload.length !== 0) throw handshakeError('first handshake message carries a payload');
    const proof = this.proof(ROLE_RESPONDER, this.noise.getHandshakeHash());
    // ee fails here when the peer's ephemeral key is a low-order point (an all-zero shared secret).
    const reply = wrapFailure('ERR_HANDSHAKE', "the peer's ephemeral key is invalid", () =>
      this.noise.send(proof),
    );
    this.transcript = this.noise.getHandshakeHash();
    this.phase = 'awaiting-third';
    return { reply, session: undefined };
  }

  /** Initiator: `<- e, ee, s, es` with the responder's proof, answered with `-> s, se` and ours. */
  private onSecond(message: Uint8Array): HandshakeStep {
    if (message.length !== HANDSHAKE_MESSAGE_BYTES.second) {
      throw handshakeError(
        `second handshake message of ${message.length} bytes, expected ${HANDSHAKE_MESSAGE_BYTES.second}`,
      );
    }
    const payload = wrapFailure('ERR_HANDSHAKE', 'second handshake message does not decrypt', () =>
      this.noise.recv(Buffer.from(message)),
    );
    const remotePublicKey = this.checkProof(payload, ROLE_RESPONDER);
    const proof = this.proof(ROLE_INITIATOR, this.noise.getHandshakeHash());
    const reply = wrapFailure('ERR_HANDSHAKE', "the peer's keys are invalid", () => this.noise.send(proof));
    return { reply, session: this.finish(remotePublicKey) };
  }

  /** Responder: `-> s, se` with the initiator's proof. */
  private onThird(message: Uint8Array): HandshakeStep {
    if (message.length !== HANDSHAKE_MESSAGE_BYTES.third) {
      throw handshakeError(
        `third handshake message of ${message.length} bytes, expected ${HANDSHAKE_MESSAGE_BYTES.third}`,
      );
    }
    const payload = wrapFailure('ERR_HANDSHAKE', 'third handshake message does not decrypt', () =>
      this.noise.recv(Buffer.from(message)),
    );
    return { reply: undefined, session: this.finish(this.checkProof(payload, ROLE_INITIATOR)) };
  }

  private signedProofBytes(role: number, staticKey: Uint8Array, transcript: Uint8Array): Buffer {
    return Buffer.concat([IDENTITY_PROOF_PREFIX, Buffer.of(role), staticKey, transcript]);
  }

  /** Our identity payload for a message sent with handshake hash `transcript` before it. */
  private proof(role: number, transcript: Buffer): Buffer {
    const signature = this.identity.sign(this.signedProofBytes(role, this.noise.s.publicKey, transcript));
    return Buffer.concat([Buffer.of(PROOF_VERSION), this.identity.publicKey, signature]);
  }

  /**
   * Checks the peer's identity payload and returns its identity key.
   * @throws {SecurityError} `ERR_HANDSHAKE` for a malformed payload, `ERR_IDENTITY` for a proof that
   *   does not verify (strictly: a small-order key never does), `ERR_UNEXPECTED_PEER` for an identity
   *   other than the expected one.
   */
  private checkProof(payload: Buffer, role: number): Buffer {
    const remoteStatic = this.noise.rs;
    const transcript = this.transcript;
    if (remoteStatic === null || transcript === undefined) throw new Error('handshake state lost its keys'); // a bug
    if (payload.length !== PROOF_BYTES || payload[0] !== PROOF_VERSION) {
      throw handshakeError('malformed identity payload');
    }
    const publicKey = Buffer.from(payload.subarray(1, 1 + PUBLIC_KEY_BYTES));
    const signature = payload.subarray(1 + PUBLIC_KEY_BYTES);
    // libsodium, not node:crypto: OpenSSL's check takes a small-order key (the identity point, ...)
    // with a signature anyone can make (R a small-order point, S = 0), so a peer could prove such a
    // key with no private key. libsodium refuses small-order keys and R, and non-canonical encodings:
    // the same check as the chat signatures (sign.ts), which then never meet a key proven here that
    // they would refuse. Once per handshake, and faster than node:crypto's anyway.
    const signed = this.signedProofBytes(role, remoteStatic, transcript);
    if (!sodium.crypto_sign_verify_detached(signature, signed, publicKey)) {
      throw new SecurityError('ERR_IDENTITY', "the peer's identity proof does not verify");
    }
    const remoteId = nodeIdOf(publicKey);
    if (this.expectedRemoteId !== undefined && remoteId !== this.expectedRemoteId) {
      throw new SecurityError(
        'ERR_UNEXPECTED_PEER',
        `expected node ${this.expectedRemoteId}, the peer proved to be ${remoteId}`,
      );
    }
    return publicKey;
  }

  private finish(remotePublicKey: Buffer): SecureSession {
    const { tx, rx, hash } = this.noise;
    if (!this.noise.complete || tx === null || rx === null || hash === null) {
      throw new Error('noise-handshake did not complete after the last message'); // a bug
    }
    this.phase = 'done';
    const sending = new CipherState(tx, this.maxMessageBytes);
    const receiving = new CipherState(rx, this.maxMessageBytes);
    return {
      remoteId: nodeIdOf(remotePublicKey),
      remotePublicKey,
      handshakeHash: Buffer.from(hash),
      initiator: this.initiator,
      maxMessageBytes: this.maxMessageBytes,
      encrypt: (plaintext) => sending.encrypt(plaintext),
      encryptInto: (out, plaintext) => sending.encryptInto(out, plaintext),
      decrypt: (ciphertext) => receiving.decrypt(ciphertext),
      decryptInPlace: (ciphertext) => receiving.decryptInPlace(ciphertext),
    };
  }
}
