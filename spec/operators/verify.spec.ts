import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { from, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { signatureCheck, verifySignatures, type VerifyOptions } from '../../lib/operators/verify.js';
import type { Inbound } from '../../lib/operators/types.js';
import { binaryChatLayout, encodeChat, parseFrame, type ChatFrame } from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import { networkTag } from '../../lib/security/network-key.js';
import { signedChat } from '../helpers/nodes.js';

const scheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const network = networkTag();
const author = generateIdentity();
const peer = { id: 'relay', host: '127.0.0.1' };

function signed(text: string, seq: number, net: Buffer = network): ChatFrame {
  return signedChat(author, { id: `m${seq}`, nick: 'ann', ts: 1_700_000_000_000, seq, text }, net);
}

const inbound = (frame: ChatFrame, from: typeof peer | null = peer): Inbound<ChatFrame> => ({
  peer: from,
  frame,
  payload: Buffer.alloc(0),
});

const good = inbound(signed('hello', 1));
const tampered = inbound({ ...signed('hello', 2), text: 'HELLO' });
const otherNetwork = inbound(signed('hello', 3, networkTag(Buffer.alloc(32, 7))));
const impostor = inbound({ ...signed('hello', 4), from: generateIdentity().id });
const ownUnsigned = inbound({ ...signed('mine', 5), sig: 'x'.repeat(86) }, null);

describe('verifySignatures', () => {
  describe('trusted: a message its author delivered over the authenticated channel', () => {
    const authorPeer = { id: author.id, host: '127.0.0.1', key: author.publicKey.toString('hex') };
    const direct = inbound({ ...signed('hello', 6), sig: 'x'.repeat(86) }, authorPeer);

    it('passes it unchecked, marked unverified, when the node says it goes nowhere else', () => {
      const asked: string[] = [];
      scheduler().run(({ cold, expectObservable }) => {
        const source = cold('-d-|', { d: direct });
        const op = verifySignatures({ network, trusted: (m) => (asked.push(m.frame.id), true) });
        expectObservable(source.pipe(op)).toBe('-u-|', { u: { ...direct, unverified: true } });
      });
      assert.deepEqual(asked, ['m6']);
    });

    it('checks it when the node says it goes on (trusted returns false)', () => {
      const reports: string[] = [];
      scheduler().run(({ cold, expectObservable }) => {
        const source = cold('-d-g-|', { d: direct, g: inbound(signed('hi', 7), authorPeer) });
        const op = verifySignatures({ network, trusted: () => false, onInvalid: (_m, r) => reports.push(r) });
        expectObservable(source.pipe(op)).toBe('---g-|', { g: inbound(signed('hi', 7), authorPeer) });
      });
      assert.deepEqual(reports, ['its signature does not verify']);
    });

    it('never trusts a message whose key is not the proven key of the peer that delivered it', () => {
      const relayed = inbound({ ...signed('hello', 8), sig: 'x'.repeat(86) }); // via a relay: no key
      const otherKey = { ...authorPeer, key: generateIdentity().publicKey.toString('hex') };
      const forged = inbound({ ...signed('hello', 9), sig: 'x'.repeat(86) }, otherKey);
      const reports: string[] = [];
      scheduler().run(({ cold, expectObservable }) => {
        const source = cold('-r-f-|', { r: relayed, f: forged });
        const op = verifySignatures({
          network,
          trusted: () => true,
          onInvalid: (m, r) => reports.push(`${m.frame.id}: ${r}`),
        });
        expectObservable(source.pipe(op)).toBe('-----|');
      });
      assert.deepEqual(reports, ['m8: its signature does not verify', 'm9: its signature does not verify']);
    });

    it("refuses a message carrying the peer's key under another sender id", () => {
      const renamed = inbound({ ...signed('hello', 10), from: 'someone-else' }, authorPeer);
      const reports: string[] = [];
      scheduler().run(({ cold, expectObservable }) => {
        const source = cold('-r-|', { r: renamed });
        const op = verifySignatures({ network, trusted: () => true, onInvalid: (_m, r) => reports.push(r) });
        expectObservable(source.pipe(op)).toBe('---|');
      });
      assert.deepEqual(reports, ['its sender id is not the id of its key']);
    });
  });

  it('passes a message signed by the key of its sender, for this network', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-a-|', { a: good });
      expectObservable(source.pipe(verifySignatures({ network }))).toBe('-a-|', { a: good });
      expectSubscriptions(source.subscriptions).toBe('^--!');
    });
  });

  it('drops tampered, other-network and impostor messages and reports each with its reason', () => {
    const reports: string[] = [];
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold('-t-o-i-g-|', { t: tampered, o: otherNetwork, i: impostor, g: good });
      const op = verifySignatures({
        network,
        onInvalid: (m, reason) => reports.push(`${m.frame.id}: ${reason}`),
      });
      expectObservable(source.pipe(op)).toBe('-------g-|', { g: good });
      expectSubscriptions(source.subscriptions).toBe('^--------!');
    });
    assert.deepEqual(reports, [
      'm2: its signature does not verify',
      'm3: its signature does not verify',
      'm4: its sender id is not the id of its key',
    ]);
  });

  it('checks a message in the binary encoding over its bytes: the same answers', () => {
    // As a node receives it: the payload, and the frame parsed from it.
    const arriving = (payload: Buffer): Inbound<ChatFrame> => ({
      peer,
      frame: parseFrame(payload) as ChatFrame,
      payload,
    });
    const changed = (frame: ChatFrame, change: (bytes: Buffer) => void): Buffer => {
      const bytes = encodeChat(frame);
      change(bytes);
      return bytes;
    };
    const g = arriving(encodeChat(signed('hello', 11)));
    const t = arriving(changed(signed('hello', 12), (b) => b.write('J', b.indexOf('hello'), 'latin1')));
    const o = arriving(encodeChat(signed('hello', 13, networkTag(Buffer.alloc(32, 7)))));
    const other = generateIdentity().id;
    const i = arriving(changed(signed('hello', 14), (b) => b.write(other, b.indexOf(author.id), 'latin1')));
    assert.equal(t.frame.text, 'Jello');
    assert.equal(i.frame.from, other);
    const reports: string[] = [];
    scheduler().run(({ cold, expectObservable }) => {
      const source = cold('-t-o-i-g-|', { t, o, i, g });
      const op = verifySignatures({
        network,
        onInvalid: (m, reason) => reports.push(`${m.frame.id}: ${reason}`),
      });
      expectObservable(source.pipe(op)).toBe('-------g-|', { g });
    });
    assert.deepEqual(reports, [
      'm12: its signature does not verify',
      'm13: its signature does not verify',
      'm14: its sender id is not the id of its key',
    ]);
  });

  it('hands the checker the layout a message carries (read when it was parsed), and answers the same with it', () => {
    const payload = encodeChat(signed('hello', 15));
    const layout = binaryChatLayout(payload)!;
    const frame = parseFrame(payload, undefined, layout) as ChatFrame;
    const tampered = Buffer.from(payload);
    tampered.write('J', tampered.indexOf('hello'), 'latin1');
    const given: unknown[] = [];
    const recording = signatureCheck({
      network,
      checker: (_frame, _payload, known) => (given.push(known), undefined),
    });
    assert.ok(recording({ peer, frame, payload, layout }));
    assert.deepEqual(given, [layout]);
    const check = signatureCheck({ network });
    assert.ok(check({ peer, frame, payload, layout }));
    const reports: string[] = [];
    const reporting = signatureCheck({ network, onInvalid: (_m, reason) => reports.push(reason) });
    assert.equal(reporting({ peer, frame, payload: tampered, layout }), undefined);
    assert.deepEqual(reports, ['its signature does not verify']);
  });

  it("passes this node's own messages without checking them", () => {
    scheduler().run(({ cold, expectObservable }) => {
      expectObservable(cold('-a|', { a: ownUnsigned }).pipe(verifySignatures({ network }))).toBe('-a|', {
        a: ownUnsigned,
      });
    });
  });

  it('passes errors through, and stops at unsubscription', () => {
    scheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const failing = cold('-a-#', { a: good }, new Error('boom'));
      expectObservable(failing.pipe(verifySignatures({ network }))).toBe(
        '-a-#',
        { a: good },
        new Error('boom'),
      );
      const long = cold('-a-a-a-|', { a: good });
      expectObservable(long.pipe(verifySignatures({ network })), '^--!').toBe('-a-', { a: good });
      expectSubscriptions(long.subscriptions).toBe('^--!');
    });
  });

  it('turns a throwing onInvalid into an error notification', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const op = verifySignatures({
        network,
        onInvalid: () => {
          throw new Error('report failed');
        },
      });
      expectObservable(cold('-t-g|', { t: tampered, g: good }).pipe(op)).toBe(
        '-#',
        undefined,
        new Error('report failed'),
      );
    });
  });

  it('lets take(n) stop a synchronous source', () => {
    let pulled = 0;
    const out: Inbound<ChatFrame>[] = [];
    from([good, good, good, good])
      .pipe(
        tap(() => pulled++),
        verifySignatures({ network }),
        take(2),
      )
      .subscribe((m) => out.push(m));
    assert.equal(out.length, 2);
    assert.equal(pulled, 2);
  });

  it('throws RangeError at verification for a network tag of the wrong size (a configuration bug)', () => {
    assert.throws(
      () =>
        from([good])
          .pipe(verifySignatures({ network: Buffer.alloc(3) }))
          .subscribe(),
      RangeError,
    );
  });
});

describe('signatureCheck', () => {
  const authorPeer = { id: author.id, host: '127.0.0.1', key: author.publicKey.toString('hex') };
  /** A peer under the author's id whose proven key is another's. */
  const otherKeyPeer = { ...authorPeer, key: generateIdentity().publicKey.toString('hex') };
  const unsigned = (text: string, seq: number): ChatFrame => ({ ...signed(text, seq), sig: 'x'.repeat(86) });
  /** Every kind of message verifySignatures' specs use, by name. */
  const fixtures = {
    good,
    tampered,
    otherNetwork,
    impostor,
    ownUnsigned,
    fromAuthor: inbound(signed('hi', 20), authorPeer),
    directUnsigned: inbound(unsigned('hello', 21), authorPeer),
    relayedUnsigned: inbound(unsigned('hello', 22)),
    otherKeyUnsigned: inbound(unsigned('hello', 23), otherKeyPeer),
    renamed: inbound({ ...signed('hello', 24), from: 'someone-else' }, authorPeer),
  } satisfies Record<string, Inbound<ChatFrame>>;
  const TRUSTED: [string, Pick<VerifyOptions, 'trusted'>][] = [
    ['no trusted', {}],
    ['trusted: always', { trusted: () => true }],
    ['trusted: never', { trusted: () => false }],
  ];

  /** What verifySignatures passes of `message` (undefined: nothing), and the reasons it reports. */
  function throughOperator(
    message: Inbound<ChatFrame>,
    options: Pick<VerifyOptions, 'trusted'>,
  ): { out: Inbound<ChatFrame> | undefined; reasons: string[] } {
    const reasons: string[] = [];
    let out: Inbound<ChatFrame> | undefined;
    from([message])
      .pipe(verifySignatures({ network, ...options, onInvalid: (_m, reason) => reasons.push(reason) }))
      .subscribe((m) => (out = m));
    return { out, reasons };
  }

  for (const [trustName, trust] of TRUSTED) {
    it(`gives what verifySignatures passes, and reports the same reasons (${trustName})`, () => {
      for (const [name, message] of Object.entries(fixtures)) {
        const reasons: string[] = [];
        const reported: Inbound<ChatFrame>[] = [];
        const check = signatureCheck({
          network,
          ...trust,
          onInvalid: (m, reason) => (reported.push(m), reasons.push(reason)),
        });
        const out = check(message);
        assert.deepEqual({ out, reasons }, throughOperator(message, trust), name);
        // Reported with the message itself, exactly when it is dropped.
        assert.deepEqual(reported, out === undefined ? [message] : [], name);
      }
    });
  }

  it('passes a valid message and its own as they are, and drops the rest with the reason', () => {
    const reasons: string[] = [];
    const check = signatureCheck({
      network,
      onInvalid: (m, reason) => reasons.push(`${m.frame.id}: ${reason}`),
    });
    assert.equal(check(good), good);
    assert.equal(check(ownUnsigned), ownUnsigned);
    assert.equal(check(fixtures.fromAuthor), fixtures.fromAuthor);
    for (const message of [tampered, otherNetwork, impostor, fixtures.directUnsigned]) {
      assert.equal(check(message), undefined);
    }
    assert.deepEqual(reasons, [
      'm2: its signature does not verify',
      'm3: its signature does not verify',
      'm4: its sender id is not the id of its key',
      'm21: its signature does not verify',
    ]);
  });

  it('marks a message it lets through unchecked as unverified, and only one from the peer whose key it carries', () => {
    const reasons: string[] = [];
    const check = signatureCheck({
      network,
      trusted: () => true,
      onInvalid: (_m, reason) => reasons.push(reason),
    });
    assert.deepEqual(check(fixtures.directUnsigned), { ...fixtures.directUnsigned, unverified: true });
    assert.equal(check(fixtures.relayedUnsigned), undefined);
    assert.equal(check(fixtures.otherKeyUnsigned), undefined);
    assert.equal(check(fixtures.renamed), undefined);
    assert.deepEqual(reasons, [
      'its signature does not verify',
      'its signature does not verify',
      'its sender id is not the id of its key',
    ]);
  });

  it('asks trusted only about a message from the peer whose key it carries', () => {
    const asked: string[] = [];
    const check = signatureCheck({ network, trusted: (m) => (asked.push(m.frame.id), false) });
    for (const message of Object.values(fixtures)) check(message);
    assert.deepEqual(asked, ['m20', 'm21', 'm24']);
  });

  it('lets a throwing onInvalid or trusted escape to the caller (filterMap turns it into an error)', () => {
    const boom = new Error('report failed');
    const fail = (): never => {
      throw boom;
    };
    assert.throws(() => signatureCheck({ network, onInvalid: fail })(tampered), boom);
    assert.throws(() => signatureCheck({ network, trusted: fail })(fixtures.directUnsigned), boom);
  });

  for (const size of [0, 3, 31, 33, 64]) {
    it(`throws a RangeError at call time for a network tag of ${size} bytes`, () => {
      assert.throws(() => signatureCheck({ network: Buffer.alloc(size) }), RangeError);
      assert.throws(() => verifySignatures({ network: Buffer.alloc(size) }), RangeError);
    });
  }
});
