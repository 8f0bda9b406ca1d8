// Types for the parts of noise-protocol (emilbayes, 3.x) that the interoperability spec uses.
declare module 'noise-protocol' {
  interface KeyPair {
    publicKey: Uint8Array;
    secretKey: Uint8Array;
  }
  /** Opaque handshake state; `symmetricState` is not used here. */
  interface HandshakeState {
    readonly rs: Uint8Array | null;
  }
  /** Cipher states after the split: 32-byte key then 8-byte nonce. */
  interface Split {
    tx: Uint8Array;
    rx: Uint8Array;
  }
  interface NoiseProtocol {
    initialize(pattern: 'XX', initiator: boolean, prologue: Uint8Array, s?: KeyPair | null): HandshakeState;
    /** Returns the split after the last message; `writeMessage.bytes` is the message length. */
    writeMessage: ((
      state: HandshakeState,
      payload: Uint8Array,
      messageBuffer: Uint8Array,
    ) => Split | undefined) & {
      bytes: number;
    };
    /** Returns the split after the last message; `readMessage.bytes` is the payload length. */
    readMessage: ((
      state: HandshakeState,
      message: Uint8Array,
      payloadBuffer: Uint8Array,
    ) => Split | undefined) & {
      bytes: number;
    };
    keygen(): KeyPair;
    destroy(state: HandshakeState): void;
  }
  const noise: NoiseProtocol;
  export = noise;
}
