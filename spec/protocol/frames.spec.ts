import { isUtf8 } from 'node:buffer';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ProtocolError, type ProtocolErrorCode } from '../../lib/protocol/errors.js';
import {
  FRAME_TYPES,
  MAX_NICK_LENGTH,
  MAX_PEERS_PER_LIST,
  MAX_TEXT_LENGTH,
  MAX_BATCH,
  MAX_SYNC_RANGES,
  parseFrame,
  PROTOCOL_VERSION,
  serializeFrame,
  chatIdOf,
  encodeChat,
  isBinaryChat,
  binaryChatLayout,
  BINARY_CHAT,
  validateFrame,
  type ByeFrame,
  type ChatFrame,
  type ChatProof,
  type SyncMark,
  type Frame,
  type HelloFrame,
  type PeerEntry,
  type PeersFrame,
  type PingFrame,
  type PongFrame,
  type SyncFrame,
} from '../../lib/protocol/frames.js';

const NUM_RUNS = 200;

/** Codes `validateFrame` may throw; `parseFrame` adds ERR_BAD_JSON. */
const VALIDATE_CODES: readonly ProtocolErrorCode[] = [
  'ERR_BAD_FRAME',
  'ERR_UNKNOWN_TYPE',
  'ERR_PROTOCOL_VERSION',
];
const PARSE_CODES: readonly ProtocolErrorCode[] = ['ERR_BAD_JSON', ...VALIDATE_CODES];

/** Every field each frame type carries; anything else is dropped by validation. */
const FIELDS: Readonly<Record<Frame['type'], readonly string[]>> = {
  hello: ['type', 'v', 'id', 'nick', 'port', 'addr', 'pack', 'binary', 'seq', 'ts'],
  chat: ['type', 'id', 'from', 'nick', 'ts', 'seq', 'text', 'key', 'sig', 'proof'],
  peers: ['type', 'peers'],
  ping: ['type', 'n'],
  pong: ['type', 'n'],
  bye: ['type', 'reason'],
  sync: ['type', 'marks', 'minAgeMs', 'rx', 'busy', 'max', 'since'],
};

/** A validator for `assert.throws` that wants a ProtocolError with `code`. */
function protocolError(code: ProtocolErrorCode): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

const payload = (value: unknown): Buffer => Buffer.from(JSON.stringify(value), 'utf8');

/**
 * Runs `decode` and returns its frame, or undefined when it throws a ProtocolError with one of
 * `codes`; anything else (TypeError, RangeError, another code) fails the test.
 */
function frameOrProtocolError(decode: () => Frame, codes: readonly ProtocolErrorCode[]): Frame | undefined {
  let frame: Frame;
  try {
    frame = decode();
  } catch (err) {
    if (!(err instanceof ProtocolError)) throw err;
    assert.ok(codes.includes(err.code), `unexpected code ${err.code}`);
    return undefined;
  }
  assert.ok(FRAME_TYPES.includes(frame.type));
  assert.deepEqual(validateFrame(frame), frame, 'a returned frame is itself valid');
  return frame;
}

// ---- arbitraries, each within the protocol limits ----

const idArb = fc.stringMatching(/^[0-9a-zA-Z_-]{1,64}$/);

/** Strings of at most `max` UTF-16 code units: printable ones, and any code units (lone surrogates too). */
function textArb(max: number): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string({ maxLength: max }),
    fc
      .array(fc.integer({ min: 0, max: 0xffff }), { maxLength: max })
      .map((units) => String.fromCharCode(...units)),
    fc.string({ unit: 'grapheme', maxLength: max }).filter((s) => s.length <= max),
  );
}

const uint32Arb = fc
  .tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }))
  .map(([high, low]) => high * 0x1_0000 + low);

const helloArb: fc.Arbitrary<HelloFrame> = fc
  .tuple(
    idArb,
    textArb(MAX_NICK_LENGTH),
    fc.integer({ min: 1, max: 65535 }),
    fc.option(textArb(300), { nil: undefined }),
    fc.option(fc.integer({ min: 0, max: 0xffff_ffff }), { nil: undefined }),
    fc.option(fc.boolean(), { nil: undefined }),
    fc.option(fc.nat(), { nil: undefined }),
    fc.option(fc.nat(), { nil: undefined }),
  )
  .map(([id, nick, port, addr, pack, binary, seq, ts]) => {
    const hello: HelloFrame = { type: 'hello', v: PROTOCOL_VERSION, id, nick, port };
    return {
      ...hello,
      ...(addr === undefined ? {} : { addr }),
      ...(pack === undefined ? {} : { pack }),
      ...(binary === undefined ? {} : { binary }),
      ...(seq === undefined ? {} : { seq }),
      ...(ts === undefined ? {} : { ts }),
    };
  });

/** A public key as a chat frame carries it: 32 bytes in lowercase hex. */
const keyArb = fc
  .uint8Array({ minLength: 32, maxLength: 32 })
  .map((bytes) => Buffer.from(bytes).toString('hex'));
/** A signature as a chat frame carries it: 64 bytes in unpadded base64url (86 characters). */
const sigArb = fc
  .uint8Array({ minLength: 64, maxLength: 64 })
  .map((bytes) => Buffer.from(bytes).toString('base64url'));

/** Well-formed key and signature fields for hand-written chat frames (validation does not verify them). */
const KEY = 'ab'.repeat(32);
const SIG = 'A'.repeat(86);

/** A message's place in a batch: any index of 2..MAX_BATCH, up to ten 32-byte hashes. */
const proofArb: fc.Arbitrary<ChatProof> = fc.integer({ min: 2, max: MAX_BATCH }).chain((n) =>
  fc.record(
    {
      i: fc.integer({ min: 0, max: n - 1 }),
      n: fc.constant(n),
      path: fc
        .integer({ min: 0, max: 10 })
        .chain((k) => fc.uint8Array({ minLength: 32 * k, maxLength: 32 * k }))
        .map((bytes) => Buffer.from(bytes).toString('base64url')),
    },
    { noNullPrototype: true },
  ),
);

const chatArb: fc.Arbitrary<ChatFrame> = fc.record(
  {
    type: fc.constant('chat'),
    id: idArb,
    from: idArb,
    nick: textArb(MAX_NICK_LENGTH),
    ts: fc.maxSafeNat(),
    seq: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    text: textArb(MAX_TEXT_LENGTH),
    key: keyArb,
    sig: sigArb,
    proof: proofArb,
  },
  { noNullPrototype: true, requiredKeys: ['type', 'id', 'from', 'nick', 'ts', 'seq', 'text', 'key', 'sig'] },
);

const peerEntryArb: fc.Arbitrary<PeerEntry> = fc.record(
  { id: idArb, addr: textArb(300) },
  { noNullPrototype: true },
);

const peersArb: fc.Arbitrary<PeersFrame> = fc.record(
  {
    type: fc.constant('peers'),
    peers: fc.array(peerEntryArb, { maxLength: MAX_PEERS_PER_LIST }),
  },
  { noNullPrototype: true },
);

const pingArb: fc.Arbitrary<PingFrame> = fc.record(
  { type: fc.constant('ping'), n: uint32Arb },
  { noNullPrototype: true },
);
const pongArb: fc.Arbitrary<PongFrame> = fc.record(
  { type: fc.constant('pong'), n: uint32Arb },
  { noNullPrototype: true },
);

const byeArb: fc.Arbitrary<ByeFrame> = fc.record(
  {
    type: fc.constant('bye'),
    reason: fc.oneof(fc.constantFrom('shutdown', 'full', 'duplicate'), textArb(64)),
  },
  { noNullPrototype: true },
);

/** A mark, and maybe the ascending, disjoint ranges held above it. */
const syncMarkArb: fc.Arbitrary<SyncMark> = fc
  .tuple(
    idArb,
    fc.nat({ max: 1_000_000 }),
    fc.array(fc.tuple(fc.integer({ min: 1, max: 50 }), fc.nat({ max: 50 })), { maxLength: MAX_SYNC_RANGES }),
    fc.boolean(),
  )
  .map(([from, seq, steps, withHave]) => {
    if (!withHave) return { from, seq };
    let above = seq;
    const have = steps.map(([gap, length]): [number, number] => {
      const range: [number, number] = [above + gap, above + gap + length];
      above = range[1];
      return range;
    });
    return { from, seq, have };
  });

const syncArb: fc.Arbitrary<SyncFrame> = fc.record(
  {
    type: fc.constant('sync'),
    marks: fc.array(syncMarkArb, { maxLength: 50 }),
    minAgeMs: fc.integer({ min: 0, max: 60_000 }),
    rx: fc.maxSafeNat(),
    busy: fc.boolean(),
    max: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    since: fc.maxSafeNat(),
  },
  { noNullPrototype: true, requiredKeys: ['type', 'marks'] },
);

const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  helloArb,
  chatArb,
  peersArb,
  pingArb,
  pongArb,
  byeArb,
  syncArb,
);

/** A valid frame with one of its fields (or a field of one peer entry) replaced by any JSON value. */
const mutatedFrameArb = fc
  .tuple(frameArb, fc.nat(), fc.jsonValue(), fc.boolean())
  .map(([frame, pick, value, remove]): Record<string, unknown> => {
    const raw: Record<string, unknown> = JSON.parse(JSON.stringify(frame)) as Record<string, unknown>;
    const firstPeer = frame.type === 'peers' ? (raw['peers'] as Record<string, unknown>[])[0] : undefined;
    const target = firstPeer !== undefined && pick % 2 === 0 ? firstPeer : raw;
    const keys = target === raw ? FIELDS[frame.type] : ['id', 'addr'];
    const key = keys[pick % keys.length] ?? 'type';
    if (remove) delete target[key];
    else target[key] = value;
    return raw;
  });

// ---- specs ----

describe('serializeFrame / parseFrame', () => {
  it('round-trips every valid frame unchanged', () => {
    fc.assert(
      fc.property(frameArb, (frame) => {
        assert.deepEqual(parseFrame(serializeFrame(frame)), frame);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('serialises a frame as UTF-8 JSON', () => {
    const frame: PingFrame = { type: 'ping', n: 7 };
    assert.equal(serializeFrame(frame).toString('utf8'), '{"type":"ping","n":7}');
  });

  it('round-trips a lone surrogate in chat text', () => {
    const frame: ChatFrame = {
      type: 'chat',
      id: 'm1',
      from: 'n1',
      nick: '\ud800',
      ts: 0,
      seq: 1,
      text: 'a\udfffb',
      key: KEY,
      sig: SIG,
    };
    assert.deepEqual(parseFrame(serializeFrame(frame)), frame);
  });

  it('gives a Frame or a ProtocolError for any bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
          fc.json().map((text) => Buffer.from(text, 'utf8')),
          mutatedFrameArb.map(payload),
        ),
        (bytes) => {
          frameOrProtocolError(() => parseFrame(bytes), PARSE_CODES);
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('refuses bytes that are not JSON with ERR_BAD_JSON', () => {
    for (const text of ['', '{', 'hello', '{"type":"ping","n":1', '\ufeff{"type":"ping","n":1}']) {
      assert.throws(() => parseFrame(Buffer.from(text, 'utf8')), protocolError('ERR_BAD_JSON'), text);
    }
    assert.throws(() => parseFrame(Buffer.from([0xff, 0xfe, 0x00])), protocolError('ERR_BAD_JSON'));
  });
});

describe('validateFrame', () => {
  it('gives a Frame or a ProtocolError for any JSON value', () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), mutatedFrameArb), (value) => {
        frameOrProtocolError(() => validateFrame(value), VALIDATE_CODES);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('gives a Frame or a ProtocolError for any JavaScript value', () => {
    fc.assert(
      fc.property(fc.anything({ withNullPrototype: true, withMap: true, withSet: true }), (value) => {
        frameOrProtocolError(() => validateFrame(value), VALIDATE_CODES);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('drops unknown extra fields, at the top level and in peer entries', () => {
    const extraKeysArb = fc.dictionary(
      fc.string().filter((key) => !Object.values(FIELDS).some((fields) => fields.includes(key))),
      fc.jsonValue(),
      { maxKeys: 4 },
    );
    fc.assert(
      fc.property(frameArb, extraKeysArb, extraKeysArb, (frame, extra, entryExtra) => {
        const raw: unknown =
          frame.type === 'peers'
            ? { ...extra, ...frame, peers: frame.peers.map((entry) => ({ ...entryExtra, ...entry })) }
            : { ...extra, ...frame };
        assert.deepEqual(parseFrame(payload(raw)), frame);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('drops an unknown field of a hello', () => {
    const hello = { type: 'hello', v: 1, id: 'a', nick: 'ann', port: 8002, colour: 'red' };
    assert.deepEqual(validateFrame(hello), { type: 'hello', v: 1, id: 'a', nick: 'ann', port: 8002 });
  });

  describe('accepts', () => {
    it('a hello with and without addr, pack, binary, seq and ts', () => {
      const hello: HelloFrame = { type: 'hello', v: PROTOCOL_VERSION, id: 'node-1', nick: 'ann', port: 8002 };
      assert.deepEqual(validateFrame(hello), hello);
      assert.deepEqual(validateFrame({ ...hello, addr: 'example.com:9000' }), {
        ...hello,
        addr: 'example.com:9000',
      });
      assert.deepEqual(validateFrame({ ...hello, pack: 65536 }), { ...hello, pack: 65536 });
      assert.deepEqual(validateFrame({ ...hello, pack: 0 }), { ...hello, pack: 0 }, '0: no packs');
      assert.deepEqual(validateFrame({ ...hello, binary: true }), { ...hello, binary: true });
      assert.throws(() => validateFrame({ ...hello, binary: 1 }), protocolError('ERR_BAD_FRAME'));
      assert.deepEqual(validateFrame({ ...hello, seq: 42 }), { ...hello, seq: 42 });
      assert.deepEqual(validateFrame({ ...hello, seq: 0 }), { ...hello, seq: 0 }, '0: no message yet');
      assert.deepEqual(validateFrame({ ...hello, ts: 1764079331000 }), { ...hello, ts: 1764079331000 });
    });

    it('text of exactly MAX_TEXT_LENGTH and a nick of exactly MAX_NICK_LENGTH code units', () => {
      const chat: ChatFrame = {
        type: 'chat',
        id: 'm',
        from: 'n',
        nick: '😀'.repeat(MAX_NICK_LENGTH / 2),
        ts: Number.MAX_SAFE_INTEGER,
        seq: Number.MAX_SAFE_INTEGER,
        text: 'x'.repeat(MAX_TEXT_LENGTH),
        key: KEY,
        sig: SIG,
      };
      assert.deepEqual(validateFrame(chat), chat);
    });

    it('a peer list of exactly MAX_PEERS_PER_LIST entries, and an empty one', () => {
      const peers = Array.from({ length: MAX_PEERS_PER_LIST }, (_, i) => ({
        id: `p${i}`,
        addr: `h:${i + 1}`,
      }));
      assert.deepEqual(validateFrame({ type: 'peers', peers }), { type: 'peers', peers });
      assert.deepEqual(validateFrame({ type: 'peers', peers: [] }), { type: 'peers', peers: [] });
    });

    it('a bye whose reason has at most 64 code units', () => {
      for (const reason of ['shutdown', 'full', 'duplicate', '', 'r'.repeat(64)]) {
        assert.deepEqual(validateFrame({ type: 'bye', reason }), { type: 'bye', reason });
      }
    });

    it('ping and pong nonces from 0 to 2^32-1', () => {
      for (const n of [0, 1, 0xffff_ffff]) {
        assert.deepEqual(validateFrame({ type: 'ping', n }), { type: 'ping', n });
        assert.deepEqual(validateFrame({ type: 'pong', n }), { type: 'pong', n });
      }
    });
  });

  describe('ERR_BAD_FRAME', () => {
    const hello = { type: 'hello', v: 1, id: 'a', nick: 'ann', port: 8002 };
    const chat = {
      type: 'chat',
      id: 'm',
      from: 'n',
      nick: 'ann',
      ts: 1,
      seq: 1,
      text: 'hi',
      key: KEY,
      sig: SIG,
    };

    it('for nothing else: the base chat frame of these cases is valid', () => {
      assert.deepEqual(validateFrame(chat), chat);
    });

    it('for a chat proof out of shape: a batch of 1 or over MAX_BATCH, an index outside it, a path that is not base64url or longer than ten hashes', () => {
      const path = Buffer.alloc(64).toString('base64url');
      const ok = { i: 1, n: 3, path };
      assert.deepEqual(validateFrame({ ...chat, proof: ok }), { ...chat, proof: ok });
      for (const proof of [
        null,
        [1, 3, path],
        { ...ok, n: 1 },
        { ...ok, n: MAX_BATCH + 1 },
        { ...ok, i: 3 },
        { ...ok, i: -1 },
        { ...ok, path: 'not base64url!' },
        { ...ok, path: Buffer.alloc(11 * 32).toString('base64url') },
        { i: 0, n: 2 },
      ]) {
        assert.throws(
          () => validateFrame({ ...chat, proof }),
          protocolError('ERR_BAD_FRAME'),
          JSON.stringify(proof),
        );
      }
    });

    it('for sync ranges that are not ascending ranges above their mark, too many, or a minAgeMs out of 0..60,000', () => {
      const sync = (have: unknown, minAgeMs?: unknown): unknown => ({
        type: 'sync',
        marks: [{ from: 'a', seq: 5, have }],
        ...(minAgeMs === undefined ? {} : { minAgeMs }),
      });
      assert.deepEqual(
        validateFrame(
          sync(
            [
              [7, 9],
              [11, 11],
            ],
            1000,
          ),
        ),
        sync(
          [
            [7, 9],
            [11, 11],
          ],
          1000,
        ),
      );
      const tooMany = Array.from({ length: MAX_SYNC_RANGES + 1 }, (_, k) => [10 + 2 * k, 10 + 2 * k]);
      for (const have of [
        [[5, 9]],
        [[7, 6]],
        [
          [7, 9],
          [9, 12],
        ],
        [
          [7, 9],
          [3, 4],
        ],
        [[7]],
        'x',
        [[7, 'x']],
        tooMany,
      ]) {
        assert.throws(() => validateFrame(sync(have)), protocolError('ERR_BAD_FRAME'), JSON.stringify(have));
      }
      for (const age of [-1, 60_001, 1.5, '5']) {
        assert.throws(() => validateFrame(sync([[7, 9]], age)), protocolError('ERR_BAD_FRAME'), String(age));
      }
    });

    it('for a sync whose rx (frames read on the link) is not a non-negative safe integer', () => {
      const sync = (rx: unknown): unknown => ({ type: 'sync', marks: [], rx });
      assert.deepEqual(validateFrame(sync(0)), sync(0));
      assert.deepEqual(validateFrame(sync(123_456)), sync(123_456));
      for (const rx of [-1, 1.5, '5', null, Number.MAX_SAFE_INTEGER + 2]) {
        assert.throws(() => validateFrame(sync(rx)), protocolError('ERR_BAD_FRAME'), String(rx));
      }
    });

    it('for a sync whose busy is not a boolean, or whose max is not a positive safe integer', () => {
      for (const busy of [1, 'true', null]) {
        assert.throws(() => validateFrame({ type: 'sync', marks: [], busy }), protocolError('ERR_BAD_FRAME'));
      }
      for (const max of [0, -1, 1.5, '5', null]) {
        assert.throws(() => validateFrame({ type: 'sync', marks: [], max }), protocolError('ERR_BAD_FRAME'));
      }
    });

    it('for a value that is not a JSON object', () => {
      for (const value of [null, 1, 'ping', true, [], [{ type: 'ping', n: 1 }]]) {
        assert.throws(() => validateFrame(value), protocolError('ERR_BAD_FRAME'), JSON.stringify(value));
      }
    });

    it('for a missing or non-string type', () => {
      for (const value of [{}, { n: 1 }, { type: 1, n: 1 }, { type: null }, { type: ['ping'], n: 1 }]) {
        assert.throws(() => validateFrame(value), protocolError('ERR_BAD_FRAME'), JSON.stringify(value));
      }
    });

    it('for a missing field', () => {
      for (const key of Object.keys(chat).filter((k) => k !== 'type')) {
        const partial: Record<string, unknown> = { ...chat };
        delete partial[key];
        assert.throws(() => validateFrame(partial), protocolError('ERR_BAD_FRAME'), `chat without ${key}`);
      }
      for (const key of ['id', 'nick', 'port']) {
        const partial: Record<string, unknown> = { ...hello };
        delete partial[key];
        assert.throws(() => validateFrame(partial), protocolError('ERR_BAD_FRAME'), `hello without ${key}`);
      }
      assert.throws(() => validateFrame({ type: 'ping' }), protocolError('ERR_BAD_FRAME'));
      assert.throws(() => validateFrame({ type: 'bye' }), protocolError('ERR_BAD_FRAME'));
      assert.throws(() => validateFrame({ type: 'peers' }), protocolError('ERR_BAD_FRAME'));
      assert.throws(
        () => validateFrame({ type: 'peers', peers: [{ id: 'a' }] }),
        protocolError('ERR_BAD_FRAME'),
      );
    });

    it('for a field of the wrong type', () => {
      const cases: unknown[] = [
        { type: 'ping', n: '1' },
        { type: 'pong', n: null },
        { type: 'bye', reason: 1 },
        { ...chat, text: 5 },
        { ...chat, ts: '1' },
        { ...chat, nick: ['ann'] },
        { ...hello, v: '1' },
        { ...hello, port: '8002' },
        { ...hello, addr: 8002 },
        { ...hello, addr: null },
        { ...hello, pack: '65536' },
        { ...hello, pack: null },
        { ...hello, seq: '42' },
        { ...hello, ts: null },
        { type: 'peers', peers: {} },
        { type: 'peers', peers: 'a:1' },
        { type: 'peers', peers: [null] },
        { type: 'peers', peers: ['a:1'] },
        { type: 'peers', peers: [{ id: 'a', addr: 1 }] },
      ];
      for (const value of cases) {
        assert.throws(() => validateFrame(value), protocolError('ERR_BAD_FRAME'), JSON.stringify(value));
      }
    });

    it('for a number out of range or not an integer', () => {
      const cases: unknown[] = [
        { type: 'ping', n: -1 },
        { type: 'ping', n: 1.5 },
        { type: 'ping', n: 2 ** 32 },
        { ...chat, ts: -1 },
        { ...chat, ts: 2 ** 53 },
        { ...hello, port: 0 },
        { ...hello, port: 65536 },
        { ...hello, v: 1.5 },
        { ...hello, pack: -1 },
        { ...hello, pack: 2 ** 32 },
        { ...hello, pack: 1.5 },
        { ...hello, seq: -1 },
        { ...hello, seq: 2 ** 53 },
        { ...hello, ts: -1 },
        { ...hello, ts: 1.5 },
      ];
      for (const value of cases) {
        assert.throws(() => validateFrame(value), protocolError('ERR_BAD_FRAME'), JSON.stringify(value));
      }
    });

    it('for text longer than MAX_TEXT_LENGTH', () => {
      const value = { ...chat, text: 'x'.repeat(MAX_TEXT_LENGTH + 1) };
      assert.throws(() => validateFrame(value), protocolError('ERR_BAD_FRAME'));
    });

    it('for a nick longer than MAX_NICK_LENGTH code units', () => {
      assert.throws(
        () => validateFrame({ ...chat, nick: 'n'.repeat(MAX_NICK_LENGTH + 1) }),
        protocolError('ERR_BAD_FRAME'),
      );
      assert.throws(
        () => validateFrame({ ...hello, nick: '😀'.repeat(MAX_NICK_LENGTH / 2 + 1) }),
        protocolError('ERR_BAD_FRAME'),
      );
    });

    it('for a malformed or over-long id', () => {
      for (const id of ['', 'a b', 'a.b', 'é', 'x'.repeat(65)]) {
        assert.throws(() => validateFrame({ ...chat, id }), protocolError('ERR_BAD_FRAME'), `id ${id}`);
        assert.throws(
          () => validateFrame({ ...chat, from: id }),
          protocolError('ERR_BAD_FRAME'),
          `from ${id}`,
        );
        assert.throws(
          () => validateFrame({ ...hello, id }),
          protocolError('ERR_BAD_FRAME'),
          `hello id ${id}`,
        );
      }
      assert.throws(
        () => validateFrame({ type: 'peers', peers: [{ id: 'a b', addr: 'h:1' }] }),
        protocolError('ERR_BAD_FRAME'),
      );
    });

    it('for a key that is not 64 lowercase hex digits, or a sig that is not 86 base64url characters', () => {
      for (const key of ['', 'ab'.repeat(31), 'ab'.repeat(33), 'AB'.repeat(32), 'zz'.repeat(32)]) {
        assert.throws(() => validateFrame({ ...chat, key }), protocolError('ERR_BAD_FRAME'), `key ${key}`);
      }
      for (const sig of ['', 'A'.repeat(85), 'A'.repeat(87), `${'A'.repeat(84)}==`, `${'A'.repeat(85)}+`]) {
        assert.throws(() => validateFrame({ ...chat, sig }), protocolError('ERR_BAD_FRAME'), `sig ${sig}`);
      }
    });

    it('for an addr longer than 300 code units', () => {
      const addr = 'a'.repeat(301);
      assert.throws(() => validateFrame({ ...hello, addr }), protocolError('ERR_BAD_FRAME'));
      assert.throws(
        () => validateFrame({ type: 'peers', peers: [{ id: 'a', addr }] }),
        protocolError('ERR_BAD_FRAME'),
      );
    });

    it('for a bye reason longer than 64 code units', () => {
      assert.throws(
        () => validateFrame({ type: 'bye', reason: 'r'.repeat(65) }),
        protocolError('ERR_BAD_FRAME'),
      );
    });

    it('for more than MAX_PEERS_PER_LIST peers', () => {
      const peers = Array.from({ length: MAX_PEERS_PER_LIST + 1 }, (_, i) => ({
        id: `p${i}`,
        addr: `h:${i + 1}`,
      }));
      assert.throws(() => validateFrame({ type: 'peers', peers }), protocolError('ERR_BAD_FRAME'));
    });
  });

  describe('ERR_UNKNOWN_TYPE', () => {
    it('for a type string that is not a frame type', () => {
      for (const type of ['gossip', 'HELLO', '', 'constructor', '__proto__', 'x'.repeat(10_000)]) {
        assert.throws(() => validateFrame({ type }), protocolError('ERR_UNKNOWN_TYPE'), type.slice(0, 20));
      }
    });

    it('through parseFrame as well', () => {
      assert.throws(() => parseFrame(payload({ type: 'gossip', n: 1 })), protocolError('ERR_UNKNOWN_TYPE'));
    });
  });

  describe('ERR_PROTOCOL_VERSION', () => {
    it('for a hello with v: 2', () => {
      const hello = { type: 'hello', v: 2, id: 'a', nick: 'ann', port: 8002 };
      assert.throws(() => validateFrame(hello), protocolError('ERR_PROTOCOL_VERSION'));
      assert.throws(() => parseFrame(payload(hello)), protocolError('ERR_PROTOCOL_VERSION'));
    });

    it('for a hello with v: 0', () => {
      const hello = { type: 'hello', v: 0, id: 'a', nick: 'ann', port: 8002 };
      assert.throws(() => validateFrame(hello), protocolError('ERR_PROTOCOL_VERSION'));
    });

    it('before the other hello fields are checked, whose shape a newer version may change', () => {
      assert.throws(() => validateFrame({ type: 'hello', v: 2 }), protocolError('ERR_PROTOCOL_VERSION'));
    });

    it('is PROTOCOL_VERSION 1', () => {
      assert.equal(PROTOCOL_VERSION, 1);
    });
  });
});

describe('chatIdOf', () => {
  it('reads the id of every chat frame laid out as serializeFrame lays it out (type, then id)', () => {
    fc.assert(
      fc.property(chatArb, (frame) => {
        const payload = serializeFrame(frame);
        assert.equal(chatIdOf(payload), frame.id);
        assert.equal((parseFrame(payload) as ChatFrame).id, chatIdOf(payload));
      }),
    );
  });

  it('reads the id of every chat frame in the binary encoding', () => {
    fc.assert(
      fc.property(wellFormedChatArb, (frame) => {
        const payload = encodeChat(frame);
        assert.equal(chatIdOf(payload), frame.id);
        // Given to parseFrame (as a node does), the same frame as parsing without it.
        assert.deepEqual(parseFrame(payload, chatIdOf(payload)), parseFrame(payload));
      }),
    );
    const frame = encodeChat(BASE_CHAT);
    for (let cut = 0; cut < 51 + BASE_CHAT.id.length; cut++)
      assert.equal(chatIdOf(frame.subarray(0, cut)), undefined, `cut at ${cut}`);
  });

  it('returns undefined, never throws, for other frames and for arbitrary bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          helloArb.map(serializeFrame),
          fc.uint8Array().map((b) => Buffer.from(b)),
        ),
        (payload) => {
          const id = chatIdOf(payload);
          assert.ok(id === undefined || /^[0-9a-zA-Z_-]{1,64}$/.test(id));
          if (!payload.toString('latin1').startsWith('{"type":"chat","id":"') && payload[0] !== BINARY_CHAT)
            assert.equal(id, undefined);
        },
      ),
    );
    for (const text of [
      '{"type":"chat"}',
      '{"type":"chat","id":"',
      '{"type":"chat","id":"no-end',
      '{"type":"chat","id":"bad id"}',
      `{"type":"chat","id":"${'a'.repeat(65)}"}`,
      '{"id":"abc","type":"chat"}',
      ' {"type":"chat","id":"abc"}',
    ]) {
      assert.equal(chatIdOf(Buffer.from(text)), undefined, text);
    }
    assert.equal(chatIdOf(Buffer.from('{"type":"chat","id":"abc"')), 'abc');
    const longest = 'a'.repeat(64);
    assert.equal(chatIdOf(Buffer.from(`{"type":"chat","id":"${longest}"}`)), longest, '64 characters');
  });
});

/**
 * A chat frame whose nick and text are each well-formed UTF-16 (what a signed message carries).
 * Each is tested on its own: a nick ending in a high surrogate and a text starting with a low one
 * make a pair when joined, and encodeChat rightly refuses both.
 */
const wellFormedChatArb = chatArb.filter((f) => f.nick.isWellFormed() && f.text.isWellFormed());
/** Any bytes after the binary chat marker. */
const afterBinaryMarkerArb = fc
  .uint8Array({ maxLength: 400 })
  .map((bytes) => Buffer.from([BINARY_CHAT, ...bytes]));
/** A valid binary chat frame with one byte changed (possibly to itself). */
const changedBinaryChatArb = fc
  .tuple(wellFormedChatArb, fc.nat(), fc.integer({ min: 0, max: 255 }))
  .map(([frame, at, value]) => {
    const bytes = encodeChat(frame);
    bytes[at % bytes.length] = value;
    return bytes;
  });

/** A valid frame to take apart by hand: batched, with a two-hash path. */
const BASE_CHAT: ChatFrame = {
  type: 'chat',
  id: 'm1',
  from: 'n1',
  nick: 'ann',
  ts: 1_700_000_000_000,
  seq: 7,
  text: 'héllo 🌍',
  key: KEY,
  sig: SIG,
  proof: { i: 1, n: 3, path: Buffer.alloc(64, 9).toString('base64url') },
};

describe('encodeChat / parseFrame (the binary encoding of chat frames)', () => {
  it('round-trips every valid chat frame with well-formed strings, with and without a proof', () => {
    fc.assert(
      fc.property(wellFormedChatArb, (frame) => {
        const payload = encodeChat(frame);
        assert.equal(payload[0], BINARY_CHAT);
        assert.ok(isBinaryChat(payload));
        assert.deepEqual(parseFrame(payload), frame);
        // A relay to a node that reads JSON only converts it; back again it is the same bytes.
        assert.deepEqual(encodeChat(parseFrame(serializeFrame(parseFrame(payload))) as ChatFrame), payload);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('is smaller than the JSON of the same frame: the key, signature and path as bytes', () => {
    const binary = encodeChat(BASE_CHAT).length;
    const json = serializeFrame(BASE_CHAT).length;
    assert.ok(binary < json - 100, `${binary} bytes against ${json}`);
  });

  it('refuses a nick or text with a lone surrogate (RangeError): UTF-8 cannot carry it', () => {
    assert.throws(() => encodeChat({ ...BASE_CHAT, text: 'a\udfffb' }), RangeError);
    assert.throws(() => encodeChat({ ...BASE_CHAT, nick: '\ud800' }), RangeError);
  });

  it('refuses what its length fields and integers cannot carry (RangeError), rather than wrap', () => {
    const cases: ChatFrame[] = [
      { ...BASE_CHAT, seq: -1 },
      { ...BASE_CHAT, ts: 1.5 },
      { ...BASE_CHAT, ts: 2 ** 53 },
      { ...BASE_CHAT, from: 'not an id' },
      { ...BASE_CHAT, from: 'x'.repeat(300) },
      { ...BASE_CHAT, nick: 'n'.repeat(70_000) },
      { ...BASE_CHAT, proof: { ...BASE_CHAT.proof!, n: 70_000 } },
      { ...BASE_CHAT, proof: { ...BASE_CHAT.proof!, i: 3 } },
      { ...BASE_CHAT, key: 'zz'.repeat(32) },
      { ...BASE_CHAT, sig: '!'.repeat(86) },
    ];
    for (const frame of cases)
      assert.throws(() => encodeChat(frame), RangeError, JSON.stringify(frame).slice(0, 80));
  });

  it('gives a Frame or a ProtocolError for any bytes after the binary marker, and for any change to a valid frame', () => {
    fc.assert(
      fc.property(fc.oneof(afterBinaryMarkerArb, changedBinaryChatArb), (bytes) => {
        // ERR_BAD_JSON when the marker byte itself was changed.
        const frame = frameOrProtocolError(
          () => parseFrame(bytes),
          bytes[0] === BINARY_CHAT ? ['ERR_BAD_FRAME'] : PARSE_CODES,
        );
        if (frame !== undefined) assert.equal(frame.type, 'chat');
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('parses as it does alone given the layout a caller read (binaryChatLayout), for valid frames, changed ones and any bytes (property)', () => {
    /** The frame, or the code and message of the ProtocolError (anything else is thrown on). */
    const outcome = (parse: () => Frame): Frame | string => {
      try {
        return parse();
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        return `${err.code}: ${err.message}`;
      }
    };
    fc.assert(
      fc.property(
        fc.oneof(
          wellFormedChatArb.map((frame) => encodeChat(frame)),
          afterBinaryMarkerArb,
          changedBinaryChatArb,
          chatArb.map((frame) => serializeFrame(frame)),
        ),
        (bytes) => {
          const layout = binaryChatLayout(bytes);
          const id = chatIdOf(bytes);
          assert.deepEqual(
            outcome(() => parseFrame(bytes, undefined, layout)),
            outcome(() => parseFrame(bytes)),
          );
          assert.deepEqual(
            outcome(() => parseFrame(bytes, id, layout)),
            outcome(() => parseFrame(bytes)),
          );
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('reads a binary chat frame with the layout it is given, not again', () => {
    const payload = encodeChat(BASE_CHAT);
    const layout = binaryChatLayout(payload)!;
    // The text's length prefix placed one byte later: nick and text are read where it says.
    const moved = parseFrame(payload, undefined, { ...layout, textAt: layout.textAt + 1 }) as ChatFrame;
    assert.deepEqual([moved.nick, moved.text], ['ann\0', 'éllo 🌍']);
    assert.deepEqual(parseFrame(payload, undefined, layout), BASE_CHAT);
  });

  it('refuses a frame cut short or with bytes after its last field (ERR_BAD_FRAME)', () => {
    const whole = encodeChat(BASE_CHAT);
    for (let cut = 1; cut < whole.length; cut++) {
      assert.throws(
        () => parseFrame(whole.subarray(0, cut)),
        protocolError('ERR_BAD_FRAME'),
        `cut at ${cut}`,
      );
    }
    assert.throws(() => parseFrame(Buffer.concat([whole, Buffer.from([0])])), protocolError('ERR_BAD_FRAME'));
    const { proof: _proof, ...signedAlone } = BASE_CHAT;
    const alone = encodeChat(signedAlone);
    assert.throws(() => parseFrame(Buffer.concat([alone, Buffer.from([0])])), protocolError('ERR_BAD_FRAME'));
  });

  it('takes a text exactly when its bytes are valid UTF-8, and then as they decode (property)', () => {
    const utf8 = (text: string): Uint8Array => Buffer.from(text, 'utf8');
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 24 }),
      fc.string({ unit: 'grapheme', maxLength: 12 }).map(utf8),
      // valid text with U+FFFD in it, and valid text with a stray byte or a cut sequence
      fc
        .tuple(fc.string({ maxLength: 6 }), fc.string({ unit: 'grapheme', maxLength: 6 }))
        .map(([a, b]) => utf8(`${a}\uFFFD${b}`)),
      fc
        .tuple(
          fc.string({ unit: 'grapheme', maxLength: 8 }),
          fc.nat(),
          fc.constantFrom(0x80, 0xc3, 0xe2, 0xed, 0xf0, 0xff),
        )
        .map(([text, at, byte]) => {
          const out = Buffer.from(utf8(text));
          if (out.length > 0) out[at % out.length] = byte;
          return out;
        }),
    );
    fc.assert(
      fc.property(bytes, (raw) => {
        const frame = encodeChat({ ...BASE_CHAT, text: 'x'.repeat(raw.length) });
        Buffer.from(raw).copy(frame, binaryChatLayout(frame)!.textAt + 4);
        if (isUtf8(raw))
          assert.equal((parseFrame(frame) as ChatFrame).text, Buffer.from(raw).toString('utf8'));
        else assert.throws(() => parseFrame(frame), protocolError('ERR_BAD_FRAME'));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('refuses fields out of range as validateFrame does: seq 0, ts or seq over 2^53 - 1, a bad id or from, invalid UTF-8, a nick or text too long, a proof out of shape', () => {
    const layout = binaryChatLayout(encodeChat(BASE_CHAT))!;
    const idAt = 1 + 32 + 16 + 2;
    const nickAt = idAt + 2 + 2; // id 'm1', then the nick's length
    const textAt = nickAt + 3 + 4; // nick 'ann', then the text's length
    const cases: [string, (b: Buffer) => void][] = [
      ['seq 0', (b) => b.fill(0, 33, 41)],
      ['seq over 2^53 - 1', (b) => ((b[33] = 0x00), (b[34] = 0x20))],
      ['ts over 2^53 - 1', (b) => (b[41] = 0xff)],
      ['an id that is not an id', (b) => (b[idAt] = 0x20)],
      ['a from that is not an id', (b) => (b[layout.bodyEnd + 1] = 0x2e)],
      ['a nick that is not UTF-8', (b) => (b[nickAt] = 0xff)],
      ['a text that is not UTF-8', (b) => ((b[textAt] = 0xc3), (b[textAt + 1] = 0x28))],
      ['a batch of 1', (b) => ((b[layout.sigAt + 64] = 0), (b[layout.sigAt + 65] = 1))],
      ['an index outside the batch', (b) => (b[layout.sigAt + 67] = 3)],
    ];
    for (const [name, change] of cases) {
      const bytes = encodeChat(BASE_CHAT);
      change(bytes);
      assert.throws(() => parseFrame(bytes), protocolError('ERR_BAD_FRAME'), name);
    }
    const longNick = encodeChat({ ...BASE_CHAT, nick: 'n'.repeat(MAX_NICK_LENGTH) });
    assert.equal((parseFrame(longNick) as ChatFrame).nick.length, MAX_NICK_LENGTH);
    const tooLong = (frame: ChatFrame): Buffer => {
      // encodeChat writes any length; the decoder refuses what validateFrame refuses.
      return encodeChat(frame);
    };
    assert.throws(
      () => parseFrame(tooLong({ ...BASE_CHAT, nick: 'n'.repeat(MAX_NICK_LENGTH + 1) })),
      protocolError('ERR_BAD_FRAME'),
    );
    assert.throws(
      () => parseFrame(tooLong({ ...BASE_CHAT, text: 't'.repeat(MAX_TEXT_LENGTH + 1) })),
      protocolError('ERR_BAD_FRAME'),
    );
    const elevenHashes = {
      ...BASE_CHAT,
      proof: { i: 0, n: MAX_BATCH, path: Buffer.alloc(11 * 32).toString('base64url') },
    };
    assert.throws(() => encodeChat(elevenHashes), RangeError);
  });
});
