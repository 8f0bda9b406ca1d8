import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  binaryChatLayout,
  encodeChat,
  MAX_BATCH,
  parseFrame,
  serializeFrame,
  type ChatFrame,
} from '../../lib/protocol/frames.js';
import { ProtocolError } from '../../lib/protocol/errors.js';
import { chatProblemChecker } from '../../lib/operators/verify.js';
import { generateIdentity } from '../../lib/security/identity.js';
import { sodium } from '../../lib/security/sodium.js';
import { generateNetworkKey, networkTag } from '../../lib/security/network-key.js';
import {
  chatSigningBytes,
  checkedPathIsWhole,
  forgetCheckedPath,
  signChat,
  signedChatFrame,
  signedChatFrames,
  signedChats,
  SIGNING_PREFIX,
  verifyBinaryChat,
  verifyChat,
  verifyChatInBatch,
  type SignedChatFields,
} from '../../lib/security/sign.js';

const alice = generateIdentity();
const bob = generateIdentity();
const ours = networkTag(generateNetworkKey());
const theirs = networkTag(generateNetworkKey());
const publicNet = networkTag();

const message = {
  id: 'k3J0c9vQ2m8dXw1Z',
  nick: 'alice',
  ts: 1_764_079_331_000,
  text: 'hello, world',
  seq: 7,
};
const fields: SignedChatFields = { ...message, publicKey: alice.publicKey };

function flipBit(bytes: Uint8Array, bit: number): Buffer {
  const out = Buffer.from(bytes);
  const index = Math.floor(bit / 8) % out.length;
  out[index] = out[index]! ^ (1 << (bit % 8));
  return out;
}

describe('chat signatures', () => {
  it('verifies a message signed by its sender for this network', () => {
    const signature = signChat(alice, message, ours);
    assert.equal(signature.length, 64);
    assert.ok(verifyChat(fields, signature, ours));
  });

  it('fails when any signed field changes', () => {
    const signature = signChat(alice, message, ours);
    const changed: SignedChatFields[] = [
      { ...fields, id: 'k3J0c9vQ2m8dXw1Y' },
      { ...fields, publicKey: bob.publicKey },
      { ...fields, nick: 'mallory' },
      { ...fields, ts: fields.ts + 1 },
      { ...fields, text: 'hello, world!' },
      { ...fields, seq: 8 },
      { id: fields.id, publicKey: fields.publicKey, nick: fields.nick, ts: fields.ts, text: fields.text },
    ];
    for (const other of changed)
      assert.equal(verifyChat(other, signature, ours), false, JSON.stringify(other));
  });

  it('fails in another network, and between a keyed network and the public one', () => {
    assert.equal(verifyChat(fields, signChat(alice, message, ours), theirs), false);
    assert.equal(verifyChat(fields, signChat(alice, message, ours), publicNet), false);
    assert.equal(verifyChat(fields, signChat(alice, message, publicNet), ours), false);
    assert.ok(verifyChat(fields, signChat(alice, message, publicNet), publicNet));
  });

  it('fails for another signer or a signature with any bit flipped', () => {
    assert.equal(verifyChat(fields, signChat(bob, message, ours), ours), false);
    const signature = signChat(alice, message, ours);
    for (let bit = 0; bit < 512; bit += 37)
      assert.equal(verifyChat(fields, flipBit(signature, bit), ours), false);
  });

  it('builds a chat frame whose sender, key and signature verify for its fields', () => {
    const frame = signedChatFrame(alice, message, ours);
    assert.equal(frame.type, 'chat');
    assert.equal(frame.from, alice.id);
    assert.equal(frame.key, alice.publicKey.toString('hex'));
    assert.deepEqual(
      { id: frame.id, nick: frame.nick, ts: frame.ts, seq: frame.seq, text: frame.text },
      message,
    );
    assert.ok(verifyChat(fields, Buffer.from(frame.sig, 'base64url'), ours));
    assert.equal(verifyChat(fields, Buffer.from(frame.sig, 'base64url'), theirs), false);
  });

  it('signs an absent seq as 0', () => {
    const { seq: _seq, ...noSeq } = message;
    const signature = signChat(alice, noSeq, ours);
    assert.ok(verifyChat({ ...fields, seq: 0 }, signature, ours));
    assert.ok(
      chatSigningBytes({ ...fields, seq: 0 }, ours).equals(
        chatSigningBytes({ ...noSeq, publicKey: alice.publicKey }, ours),
      ),
    );
  });

  it('lays the signed bytes out with the domain prefix and length-prefixed strings', () => {
    const bytes = chatSigningBytes(fields, ours);
    assert.ok(bytes.subarray(0, SIGNING_PREFIX.length).equals(Buffer.from('p2p-chat-v1\0')));
    assert.equal(bytes[12], 1, 'kind: chat');
    assert.ok(bytes.subarray(13, 45).equals(ours));
    assert.ok(bytes.subarray(45, 77).equals(alice.publicKey));
    assert.equal(bytes.readBigUInt64BE(77), 7n);
    assert.equal(bytes.readBigUInt64BE(85), BigInt(fields.ts));
    // Moving characters between adjacent strings changes the bytes: the lengths are part of them.
    const moved = chatSigningBytes({ ...fields, nick: 'alic', text: 'ehello, world' }, ours);
    assert.ok(!bytes.equals(moved));
  });

  it('returns false, never throws, for peer-chosen bytes out of range', () => {
    const signature = signChat(alice, message, ours);
    assert.equal(verifyChat(fields, signature.subarray(0, 63), ours), false);
    assert.equal(verifyChat({ ...fields, publicKey: alice.publicKey.subarray(1) }, signature, ours), false);
    assert.equal(verifyChat({ ...fields, ts: -1 }, signature, ours), false);
    assert.equal(verifyChat({ ...fields, seq: 2 ** 53 }, signature, ours), false);
    assert.equal(verifyChat({ ...fields, text: 'a\uD800b' }, signature, ours), false);
  });

  it('refuses the signatures that only a lax verifier accepts: small-order keys, non-canonical S', () => {
    // The identity point as key, and a signature (R = identity, S = 0) that satisfies the
    // verification equation for every message under cofactor-less checks (RFC 8032 allows it).
    const identityPoint = Buffer.alloc(32);
    identityPoint[0] = 1;
    const trivial = Buffer.concat([identityPoint, Buffer.alloc(32)]);
    assert.equal(verifyChat({ ...fields, publicKey: identityPoint }, trivial, ours), false);
    assert.equal(verifyChat({ ...fields, publicKey: Buffer.alloc(32) }, Buffer.alloc(64), ours), false);
    // A valid signature with S + L (the group order) in place of S: same point, non-canonical bytes.
    const signature = signChat(alice, message, ours);
    const L = 2n ** 252n + 27742317777372353535851937790883648493n;
    let S = 0n;
    for (let i = 31; i >= 0; i--) S = (S << 8n) | BigInt(signature[32 + i]!);
    let big = S + L;
    const malleable = Buffer.from(signature);
    for (let i = 0; i < 32; i++) {
      malleable[32 + i] = Number(big & 0xffn);
      big >>= 8n;
    }
    assert.equal(verifyChat(fields, signature, ours), true);
    assert.equal(verifyChat(fields, malleable, ours), false);
  });

  it('throws a RangeError for a bad network tag or a field this node cannot sign', () => {
    assert.throws(() => verifyChat(fields, signChat(alice, message, ours), Buffer.alloc(16)), RangeError);
    assert.throws(() => signChat(alice, { ...message, ts: 1.5 }, ours), RangeError);
    assert.throws(() => signChat(alice, { ...message, nick: '\uDC00' }, ours), RangeError);
    assert.throws(() => signChat(alice, message, Buffer.alloc(31)), RangeError);
  });

  const arbitraryMessage = fc.record({
    id: fc.stringMatching(/^[0-9a-zA-Z_-]{1,64}$/),
    nick: fc.string({ maxLength: 32 }),
    ts: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
    text: fc.string({ maxLength: 200, unit: 'grapheme' }),
    seq: fc.option(fc.nat({ max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
  });

  it('lays out any message exactly as the documented layout (property)', () => {
    // The layout written out field by field, as the doc comment of chatSigningBytes states it: a
    // signature made by one version must verify in the next.
    const be = (bytes: number, value: number | bigint): Buffer => {
      const out = Buffer.alloc(bytes);
      if (bytes === 8) out.writeBigUInt64BE(BigInt(value));
      else out.writeUIntBE(Number(value), 0, bytes);
      return out;
    };
    const str = (prefix: number, value: string): Buffer => {
      const utf8 = Buffer.from(value, 'utf8');
      return Buffer.concat([be(prefix, utf8.length), utf8]);
    };
    fc.assert(
      fc.property(arbitraryMessage, (m) => {
        const expected = Buffer.concat([
          Buffer.from('p2p-chat-v1\0', 'utf8'),
          Buffer.of(1),
          ours,
          alice.publicKey,
          be(8, m.seq ?? 0),
          be(8, m.ts),
          str(2, m.id),
          str(2, m.nick),
          str(4, m.text),
        ]);
        const { seq, ...rest } = m;
        const signed: SignedChatFields = {
          ...(seq === undefined ? rest : { ...rest, seq }),
          publicKey: alice.publicKey,
        };
        assert.deepEqual(chatSigningBytes(signed, ours), expected);
      }),
      { numRuns: 300 },
    );
  });

  it('verifies any message it signed, and no message with one field changed (property)', () => {
    fc.assert(
      fc.property(arbitraryMessage, fc.nat(5), (m, which) => {
        const { seq, ...rest } = m;
        const msg = seq === undefined ? rest : { ...rest, seq };
        const signed: SignedChatFields = { ...msg, publicKey: alice.publicKey };
        const signature = signChat(alice, msg, ours);
        assert.ok(verifyChat(signed, signature, ours));
        const mutations: SignedChatFields[] = [
          { ...signed, id: `${signed.id}x` },
          { ...signed, nick: `${signed.nick}x` },
          { ...signed, text: `x${signed.text}` },
          { ...signed, ts: signed.ts === 0 ? 1 : signed.ts - 1 },
          { ...signed, seq: (signed.seq ?? 0) + 1 },
          { ...signed, publicKey: bob.publicKey },
        ];
        assert.equal(verifyChat(mutations[which]!, signature, ours), false);
      }),
      { numRuns: 200 },
    );
  });

  it('answers a boolean for any signature and key bytes (property)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 80 }),
        fc.uint8Array({ maxLength: 40 }),
        (signature, publicKey) => {
          assert.equal(verifyChat({ ...fields, publicKey }, signature, ours), false);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('batches: one signature of a hash tree for many messages', () => {
  const batchOf = (
    n: number,
    from = 1,
  ): { id: string; nick: string; ts: number; seq: number; text: string }[] =>
    Array.from({ length: n }, (_, i) => ({
      id: `b${from + i}`,
      nick: 'alice',
      ts: 1_764_079_331_000,
      seq: from + i,
      text: `line ${i}`,
    }));
  const fieldsOf = (frame: ChatFrame): SignedChatFields => ({
    id: frame.id,
    nick: frame.nick,
    ts: frame.ts,
    text: frame.text,
    seq: frame.seq,
    publicKey: Buffer.from(frame.key, 'hex'),
  });
  const verifies = (
    frame: ChatFrame,
    net: Uint8Array = ours,
    cache?: Map<string, string>,
    forgetBetween = false,
  ): boolean => {
    const answer =
      frame.proof === undefined
        ? verifyChat(fieldsOf(frame), Buffer.from(frame.sig, 'base64url'), net)
        : verifyChatInBatch(fieldsOf(frame), frame.proof, Buffer.from(frame.sig, 'base64url'), net, cache);
    // The same frame in the binary encoding, checked over its own bytes: the same answer. A proof the
    // encoding cannot carry (a batch over MAX_BATCH, a path of no whole hashes) is one that fails.
    let binary: Buffer;
    try {
      binary = encodeChat(frame);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      assert.equal(answer, false, `not encodable (${err.message}), yet valid`);
      return answer;
    }
    // Without this the binary check mostly joins the JSON check's path at its leaf.
    if (forgetBetween) forgetCheckedPath();
    assert.equal(verifyBinaryChat(binary, net, cache), answer, 'in the binary encoding');
    return answer;
  };

  it('signs one message alone, as signedChatFrame does (no proof)', () => {
    const [frame] = signedChatFrames(alice, batchOf(1), ours);
    assert.equal(frame!.proof, undefined);
    assert.ok(verifies(frame!));
  });

  it('gives every message of a batch of 2..130 the same signature and a proof that verifies on its own, in any order, with or without a cache', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 130 }), fc.integer(), (n, seed) => {
        const frames = signedChatFrames(alice, batchOf(n), ours);
        assert.equal(new Set(frames.map((f) => f.sig)).size, 1);
        assert.deepEqual(
          frames.map((f) => [f.proof!.i, f.proof!.n]),
          frames.map((_, i) => [i, n]),
        );
        const order = frames
          .map((_, i) => i)
          .sort((a, b) => ((a * 7919 + seed) % 131) - ((b * 7919 + seed) % 131));
        const cache = new Map<string, string>();
        for (const i of order) {
          assert.ok(verifies(frames[i]!), `message ${i} of ${n} alone`);
          assert.ok(verifies(frames[i]!, ours, cache), `message ${i} of ${n} with the cache`);
        }
      }),
      { numRuns: 25 },
    );
  });

  it('refuses a changed message, a proof moved to another message, another place or size, another network or signer', () => {
    const frames = signedChatFrames(alice, batchOf(37), ours);
    const cache = new Map<string, string>();
    for (const f of frames) assert.ok(verifies(f, ours, cache)); // the batch is in the cache now
    const f = frames[5]!;
    const p = f.proof!;
    const other = frames[6]!.proof!;
    const hash = (path: string): Buffer => Buffer.from(path, 'base64url');
    const changed: [string, ChatFrame][] = [
      ['changed text', { ...f, text: 'LINE 5' }],
      ['changed seq', { ...f, seq: 999 }],
      ["bob's key", { ...f, key: bob.publicKey.toString('hex') }],
    ];
    const misplaced: [string, ChatFrame][] = [
      ["another message's proof", { ...f, proof: other }],
      ['another index', { ...f, proof: { ...p, i: 4 } }],
      ['another size', { ...f, proof: { ...p, n: 36 } }],
      ['a hash short', { ...f, proof: { ...p, path: hash(p.path).subarray(32).toString('base64url') } }],
      [
        'a hash more',
        {
          ...f,
          proof: { ...p, path: Buffer.concat([hash(p.path), Buffer.alloc(32)]).toString('base64url') },
        },
      ],
      [
        'a flipped bit in the path',
        { ...f, proof: { ...p, path: flipBit(hash(p.path), 77).toString('base64url') } },
      ],
    ];
    // Cached or not, the same answer: a node never accepts what another node would refuse (it
    // would store and pass on a frame its peers refuse, and be blamed for it).
    for (const [what, frame] of [...changed, ...misplaced]) {
      assert.equal(verifies(frame), false, what);
      assert.equal(verifies(frame, ours, cache), false, `${what}, cached batch`);
    }
    assert.equal(verifies(f, theirs), false, 'another network');
  });

  it('gives the same answer with a cache in any state as without one, for intact and damaged proofs (property)', () => {
    const hash = (path: string): Buffer => Buffer.from(path, 'base64url');
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 70 }),
        fc.array(fc.nat(), { maxLength: 40 }), // messages verified before (the cache's state)
        fc.nat(),
        fc.oneof(
          fc.constant<'none'>('none'),
          fc.nat().map((bit) => ({ bit })),
          fc.nat().map((i) => ({ i })),
          fc.nat().map((n) => ({ n })),
        ),
        (n, before, which, damage) => {
          const frames = signedChatFrames(alice, batchOf(n), ours);
          const cache = new Map<string, string>();
          for (const k of before) verifies(frames[k % n]!, ours, cache);
          const f = frames[which % n]!;
          const p = f.proof!;
          let frame: ChatFrame = f;
          if (damage !== 'none' && 'bit' in damage) {
            const path = hash(p.path);
            if (path.length > 0) {
              frame = {
                ...f,
                proof: { ...p, path: flipBit(path, damage.bit % (path.length * 8)).toString('base64url') },
              };
            }
          } else if (damage !== 'none' && 'i' in damage) frame = { ...f, proof: { ...p, i: damage.i % n } };
          else if (damage !== 'none' && 'n' in damage) {
            const size = 2 + (damage.n % MAX_BATCH);
            frame = { ...f, proof: { ...p, n: size, i: Math.min(p.i, size - 1) } };
          }
          const alone = verifies(frame);
          assert.equal(verifies(frame, ours, cache), alone);
          assert.equal(
            alone,
            frame === f || (frame.proof!.i === p.i && frame.proof!.n === p.n && frame.proof!.path === p.path),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  // Damage done to a message for the checked-path properties below.
  type Damage =
    | 'none'
    | 'cut' // the path a hash short
    | 'extra' // the path a hash long
    | 'signer' // another signer's key with this signature
    | { bit: number } // a bit of the path flipped
    | { sigBit: number } // a bit of the signature flipped
    | { i: number }
    | { n: number }
    | { fields: number } // another message's fields with this proof and signature
    | { net: true };
  const damage: fc.Arbitrary<Damage> = fc.oneof(
    { weight: 5, arbitrary: fc.constant<'none'>('none') },
    fc.constantFrom<Damage>('cut', 'extra', 'signer'),
    fc.nat().map((bit) => ({ bit })),
    fc.nat().map((sigBit) => ({ sigBit })),
    fc.nat().map((i) => ({ i })),
    fc.nat().map((n) => ({ n })),
    fc.nat().map((fields) => ({ fields })),
    fc.constant({ net: true as const }),
  );
  const batchSizes = fc.oneof(
    { weight: 9, arbitrary: fc.integer({ min: 2, max: 40 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: MAX_BATCH }) }, // ten levels
  );
  /** Message `f` of `batch` (its size `n`) with damage `d`, and the network to check it for. */
  const damaged = (
    f: ChatFrame,
    batch: readonly ChatFrame[],
    n: number,
    d: Damage,
  ): [ChatFrame, Uint8Array] => {
    const p = f.proof!;
    const path = Buffer.from(p.path, 'base64url');
    if (d === 'none') return [f, ours];
    if (d === 'cut') return [{ ...f, proof: { ...p, path: path.subarray(32).toString('base64url') } }, ours];
    if (d === 'extra') {
      const longer = Buffer.concat([path, path.subarray(0, 32)]).toString('base64url');
      return [{ ...f, proof: { ...p, path: longer } }, ours];
    }
    if (d === 'signer') {
      const key = (f.key === alice.publicKey.toString('hex') ? bob : alice).publicKey.toString('hex');
      return [{ ...f, key }, ours];
    }
    if ('net' in d) return [f, theirs];
    if ('i' in d) return [{ ...f, proof: { ...p, i: d.i % n } }, ours];
    if ('n' in d) return [{ ...f, proof: { ...p, n: 2 + (d.n % n), i: Math.min(p.i, 1 + (d.n % n)) } }, ours];
    if ('fields' in d) return [{ ...batch[d.fields % n]!, proof: p, sig: f.sig }, ours];
    if ('sigBit' in d) {
      const sig = flipBit(Buffer.from(f.sig, 'base64url'), d.sigBit % 512).toString('base64url');
      return [{ ...f, sig }, ours];
    }
    const bit = d.bit % (path.length * 8);
    return [{ ...f, proof: { ...p, path: flipBit(path, bit).toString('base64url') } }, ours];
  };
  /**
   * Checks `sequence` twice: each message first alone (the last checked path forgotten), then all in
   * a row; each answer must be the same, and the last checked path whole after each.
   */
  const sameAnswersInARow = (sequence: readonly [ChatFrame, Uint8Array, boolean][]): void => {
    const first = sequence.map(([f, net, forget]) => {
      forgetCheckedPath();
      return verifies(f, net, undefined, forget);
    });
    forgetCheckedPath();
    sequence.forEach(([f, net, forget], j) => {
      assert.equal(verifies(f, net, undefined, forget), first[j], `message ${j} of the sequence`);
      assert.ok(checkedPathIsWhole(), `the last checked path after message ${j}`);
    });
  };

  it('answers for each message what it answers for it checked first, after any others (property): the last path that checked out only shortens walks', () => {
    fc.assert(
      fc.property(
        batchSizes,
        fc.array(fc.tuple(fc.nat(), damage, fc.boolean()), { minLength: 1, maxLength: 30 }),
        (n, steps) => {
          // Two batches of one signer (the same messages' places, other contents) and one of another.
          const batches = [
            signedChatFrames(alice, batchOf(n), ours),
            signedChatFrames(alice, batchOf(n, 5000), ours),
            signedChatFrames(bob, batchOf(n), ours),
          ];
          sameAnswersInARow(
            steps.map(([k, d, forget]) => {
              const batch = batches[k % 3]!;
              return [...damaged(batch[Math.floor(k / 3) % n]!, batch, n, d), forget];
            }),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  it('answers the same for a batch checked in order, each message maybe after a damaged copy of it or of a neighbour (property): where walks meet the last path as its sibling', () => {
    fc.assert(
      fc.property(
        batchSizes,
        fc.array(fc.tuple(fc.integer({ min: -1, max: 1 }), damage, fc.boolean()), { maxLength: 40 }),
        fc.integer({ min: 0, max: 1 }),
        fc.nat(),
        (n, damages, reversed, from) => {
          const batch = signedChatFrames(alice, batchOf(n), ours);
          // 60 messages in a row, anywhere in the batch (in a large one, joins high up too).
          const start = from % Math.max(1, n - 59);
          const order = batch.map((_, i) => (reversed === 1 ? n - 1 - i : i)).slice(start, start + 60);
          const sequence: [ChatFrame, Uint8Array, boolean][] = [];
          order.forEach((i, step) => {
            const hurt = damages[step];
            if (hurt !== undefined) {
              const [offset, d, forget] = hurt;
              const k = Math.min(n - 1, Math.max(0, i + offset));
              sequence.push([...damaged(batch[k]!, batch, n, d), forget]);
            }
            sequence.push([batch[i]!, ours, false]);
          });
          sameAnswersInARow(sequence);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("answers the same for any message of a batch after any other, with a third one's fields, or a hash of its path taken from a third one's path (real nodes of the tree, not random bytes)", () => {
    for (const n of [3, 5, 6, 7, 12]) {
      const batch = signedChatFrames(alice, batchOf(n), ours);
      const paths = batch.map((f) => Buffer.from(f.proof!.path, 'base64url'));
      const variants: ChatFrame[] = [];
      for (const [k, f] of batch.entries()) {
        for (const [m, other] of batch.entries()) {
          if (m === k) continue;
          variants.push({ ...other, proof: f.proof!, sig: f.sig }); // m's fields, k's place and path
          for (let at = 0; at + 32 <= Math.min(paths[k]!.length, paths[m]!.length); at += 32) {
            const path = Buffer.from(paths[k]!);
            paths[m]!.copy(path, at, at, at + 32);
            if (!path.equals(paths[k]!))
              variants.push({ ...f, proof: { ...f.proof!, path: path.toString('base64url') } });
          }
        }
      }
      const alone = variants.map((v) => {
        forgetCheckedPath();
        return verifies(v);
      });
      assert.ok(
        alone.every((answer) => !answer),
        `n = ${n}: each variant is refused alone`,
      );
      for (const before of batch) {
        for (const [j, v] of variants.entries()) {
          forgetCheckedPath();
          assert.ok(verifies(before));
          assert.equal(verifies(v), alone[j], `n = ${n}, after message ${before.proof!.i}: variant ${j}`);
          assert.ok(checkedPathIsWhole());
        }
      }
    }
  });

  it('refuses a path cut short or made longer right after the same message, or its neighbour, checked out', () => {
    for (const n of [5, 64, MAX_BATCH]) {
      const frames = signedChatFrames(alice, batchOf(n), ours);
      for (const k of [0, 1, n - 2, n - 1]) {
        const f = frames[k]!;
        const path = Buffer.from(f.proof!.path, 'base64url');
        const cut = {
          ...f,
          proof: { ...f.proof!, path: path.subarray(0, path.length - 32).toString('base64url') },
        };
        const longer = {
          ...f,
          proof: { ...f.proof!, path: Buffer.concat([path, path.subarray(0, 32)]).toString('base64url') },
        };
        for (const before of [f, frames[k ^ 1] ?? f]) {
          for (const damaged of [cut, longer]) {
            forgetCheckedPath();
            assert.ok(verifies(before), `message ${before.proof!.i} of ${n}`);
            assert.equal(
              verifies(damaged),
              false,
              `message ${k} of ${n}, path ${damaged === cut ? 'cut' : 'longer'}`,
            );
          }
        }
      }
    }
  });

  it("refuses, right after a batch's message checked out, one its signer planted in that batch under another key or for another network", () => {
    // Bob signs a tree of two leaves whose second is a message with Alice's key, or one for another
    // network: its proof rebuilds the root Bob signed, but that signature is Bob's, in ours.
    const leaf = (fields: SignedChatFields, net: Uint8Array): Buffer => {
      const out = Buffer.alloc(32);
      sodium.crypto_generichash(out, Buffer.concat([Buffer.from([0]), chatSigningBytes(fields, net)]));
      return out;
    };
    const planted: [string, Uint8Array, Uint8Array][] = [
      ["Alice's key", alice.publicKey, ours],
      ['another network', bob.publicKey, theirs],
    ];
    for (const [what, publicKey, net] of planted) {
      const own = { ...message, id: 'p1', seq: 1, publicKey: bob.publicKey };
      const other = { ...message, id: 'p2', seq: 2, publicKey };
      const left = leaf(own, ours);
      const right = leaf(other, net);
      const root = Buffer.alloc(32);
      sodium.crypto_generichash(root, Buffer.concat([Buffer.from([1]), left, right]));
      const size = Buffer.from([0, 0, 0, 2]);
      const sig = bob.sign(
        Buffer.concat([SIGNING_PREFIX, Buffer.from([2]), ours, bob.publicKey, size, root]),
      );
      forgetCheckedPath();
      assert.ok(verifyChatInBatch(own, { i: 0, n: 2, path: right.toString('base64url') }, sig, ours), what);
      assert.equal(
        verifyChatInBatch(other, { i: 1, n: 2, path: left.toString('base64url') }, sig, net),
        false,
        what,
      );
    }
  });

  it('refuses more than MAX_BATCH messages, and none', () => {
    assert.throws(() => signedChatFrames(alice, batchOf(MAX_BATCH + 1), ours), RangeError);
    assert.throws(() => signedChatFrames(alice, [], ours), RangeError);
    const frames = signedChatFrames(alice, batchOf(MAX_BATCH), ours);
    assert.ok(verifies(frames[MAX_BATCH - 1]!));
    assert.ok(Buffer.from(frames[0]!.proof!.path, 'base64url').length <= 10 * 32);
  });
});

describe('verifyBinaryChat: a chat frame in the binary encoding, checked over its bytes', () => {
  const frames = [
    signedChatFrame(alice, message, ours),
    ...signedChatFrames(
      alice,
      [message, { ...message, id: 'x2', seq: 8 }, { ...message, id: 'x3', seq: 9, text: 'ünïcödé 🌍' }],
      ours,
    ),
  ];

  it('verifies a message signed alone and each message of a batch, in their network only', () => {
    for (const frame of frames) {
      assert.ok(verifyBinaryChat(encodeChat(frame), ours));
      assert.equal(verifyBinaryChat(encodeChat(frame), theirs), false);
      assert.equal(verifyBinaryChat(encodeChat(frame), publicNet), false);
    }
  });

  it('refuses the frame with any bit flipped (property): body, signature, proof or length fields', () => {
    fc.assert(
      fc.property(fc.constantFrom(...frames), fc.nat(), (frame, bit) => {
        const whole = encodeChat(frame);
        // A flip in `from` changes no signed byte: the checker's id check catches that one.
        const fromAt = binaryChatLayout(whole)!.bodyEnd + 1;
        const at = Math.floor(bit / 8) % whole.length;
        if (at >= fromAt && at < fromAt + frame.from.length) return;
        const bytes = flipBit(whole, bit);
        assert.equal(verifyBinaryChat(bytes, ours), false);
        assert.equal(
          verifyBinaryChat(bytes, ours, undefined, binaryChatLayout(bytes)),
          false,
          'given its layout',
        );
      }),
      { numRuns: 300 },
    );
  });

  it('answers as it does alone given the layout the caller read (binaryChatLayout), and checks the bytes that layout names', () => {
    const cache = new Map<string, string>();
    for (const frame of frames) {
      const payload = encodeChat(frame);
      const layout = binaryChatLayout(payload)!;
      assert.ok(verifyBinaryChat(payload, ours, undefined, layout));
      assert.ok(verifyBinaryChat(payload, ours, cache, layout));
      assert.equal(verifyBinaryChat(payload, theirs, cache, layout), false);
      // Not read again: a layout whose signed body ends a byte early names bytes never signed.
      forgetCheckedPath();
      assert.equal(
        verifyBinaryChat(payload, ours, undefined, { ...layout, bodyEnd: layout.bodyEnd - 1 }),
        false,
      );
    }
  });

  it('answers false, never throws, for bytes that are not a binary chat frame (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        assert.equal(verifyBinaryChat(Buffer.from([1, ...bytes]), ours), false);
      }),
    );
    assert.equal(verifyBinaryChat(serializeFrame(frames[0]!), ours), false, 'JSON');
    assert.throws(() => verifyBinaryChat(encodeChat(frames[0]!), new Uint8Array(31)), RangeError);
  });
});

describe('signedChats: frames with their payloads made from the signed bytes', () => {
  it('gives for each message the frame signedChatFrames gives and exactly its binary encoding, alone and in batches of 2..70 (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70 }), fc.string({ maxLength: 30 }), (n, extra) => {
        const messages = Array.from({ length: n }, (_, i) => ({
          ...message,
          id: `s${i}`,
          seq: i + 1,
          text: `${extra} ü ${i}`,
        }));
        const chats = signedChats(alice, messages, ours);
        const frames = signedChatFrames(alice, messages, ours);
        assert.equal(chats.length, n);
        chats.forEach(({ frame, payload }, i) => {
          assert.deepEqual(frame.text, frames[i]!.text);
          assert.deepEqual(payload, encodeChat(frame), `message ${i} of ${n}`);
          assert.deepEqual(parseFrame(payload), frame);
          assert.ok(verifyBinaryChat(payload, ours));
        });
      }),
      { numRuns: 40 },
    );
  });
});

describe('binary chat frames a sender signs as it likes', () => {
  // A member signs any body: bytes that are not UTF-8 (a BOM, overlong forms, encoded surrogates, a
  // cut sequence), integers around 2^53 and up to 2^64. What a node accepts must be what was signed.
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
  const u32 = (n: number): Buffer => Buffer.from([n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  const oddBytes = fc.oneof(
    fc.uint8Array({ maxLength: 12 }).map((a) => Buffer.from(a)),
    fc.string({ unit: 'binary', maxLength: 10 }).map((t) => Buffer.from(t, 'utf8')),
    fc.constantFrom(
      ...[
        'efbbbf41',
        'c0af',
        'eda080',
        'f4908080',
        'e282',
        '41ff',
        '00',
        '7f',
        'f09f9880',
        'eda0bdedb880',
      ].map((hex) => Buffer.from(hex, 'hex')),
    ),
  );
  const u64 = fc.oneof(
    fc.bigInt({ min: 0n, max: 5n }),
    fc.bigInt({ min: (1n << 53n) - 3n, max: (1n << 53n) + 3n }),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  );
  const check = chatProblemChecker(ours);

  it('accepts one only as the frame its fields sign, which encodes back to the same bytes (property)', () => {
    let accepted = 0;
    fc.assert(
      fc.property(
        fc.oneof(
          fc.stringMatching(/^[0-9a-zA-Z_-]{1,64}$/).map((id) => Buffer.from(id)),
          oddBytes,
        ),
        oddBytes,
        oddBytes,
        u64,
        u64,
        (id, nick, text, seq, ts) => {
          const numbers = Buffer.alloc(16);
          numbers.writeBigUInt64BE(seq, 0);
          numbers.writeBigUInt64BE(ts, 8);
          const body = Buffer.concat([
            alice.publicKey,
            numbers,
            u16(id.length),
            id,
            u16(nick.length),
            nick,
            u32(text.length),
            text,
          ]);
          const sig = alice.sign(Buffer.concat([SIGNING_PREFIX, Buffer.from([1]), ours, body]));
          const from = Buffer.from(alice.id, 'latin1');
          const payload = Buffer.concat([
            Buffer.from([1]),
            body,
            Buffer.from([from.length]),
            from,
            sig,
            u16(0),
          ]);
          let frame: ChatFrame;
          try {
            frame = parseFrame(payload) as ChatFrame;
          } catch (err) {
            if (err instanceof ProtocolError) return; // refused before any check
            throw err;
          }
          assert.equal(check(frame, payload), undefined, 'signed by its key: valid');
          accepted++;
          const fieldsOfFrame = { ...frame, publicKey: Buffer.from(frame.key, 'hex') };
          assert.ok(
            verifyChat(fieldsOfFrame, Buffer.from(frame.sig, 'base64url'), ours),
            'its fields verify',
          );
          assert.deepEqual(encodeChat(frame), payload, 'the same bytes again');
        },
      ),
      { numRuns: 300 },
    );
    assert.ok(accepted > 0);
  });

  it('checks bodies larger than its scratch buffer, small ones after them, and one over 64 KiB', () => {
    const sizes = [10, 3000, 20, 40_000, 5, 70_000, 30];
    const texts = sizes.map((n, i) => (i % 2 === 0 ? 'x' : 'é').repeat(n));
    for (const text of texts) {
      const frame = signedChatFrame(alice, { ...message, text }, ours);
      assert.ok(verifyBinaryChat(encodeChat(frame), ours), `${text.length} characters`);
      assert.equal(verifyBinaryChat(encodeChat({ ...frame, text: text.slice(1) + 'y' }), ours), false);
    }
  });
});
