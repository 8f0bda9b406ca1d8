/**
 * Forged, tampered, foreign and replayed chat messages relayed by a hostile peer, end to end: real
 * nodes on 127.0.0.1, and a raw peer (spec/helpers/nodes.ts) that completes the Noise handshake and
 * the hello like any node, then sends whatever frames a test hands it.
 *
 * What every test checks: the bad message is never emitted on any node's messages$ nor relayed, the
 * honest sender's real messages still arrive exactly once, and the counters and the log tell what
 * happened.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { ChatMessage, NodeEvent, NodeOptions, P2PNode } from '../../lib/node/node.js';
import type { ChatFrame, Frame } from '../../lib/protocol/frames.js';
import { generateIdentity, type Identity } from '../../lib/security/identity.js';
import { generateNetworkKey, networkTag } from '../../lib/security/network-key.js';
import {
  connectedTo,
  downs,
  lineLogger,
  loopback,
  nodeFactory,
  peerIds,
  rawPeer,
  signedChat,
  record,
  waitFor,
  type LineLogger,
  type RawPeer,
  type Recording,
} from '../helpers/nodes.js';
import { tempDir } from '../helpers/temp.js';

const PUBLIC_TAG = networkTag();

const isChat = (frame: Frame): frame is ChatFrame => frame.type === 'chat';

/** The chat frames a raw peer received that pass `test`. */
const chatsTo = (raw: RawPeer, test: (frame: ChatFrame) => boolean): ChatFrame[] =>
  raw.frames.filter(isChat).filter(test);

/** How many times `inbox` delivered the message with id `id`. */
const times = (inbox: Recording<ChatMessage>, id: string): number =>
  inbox.values.filter((m) => m.id === id).length;

/** Messages of `inbox` with text `text`. */
const withText = (inbox: Recording<ChatMessage>, text: string): number =>
  inbox.values.filter((m) => m.text === text).length;

const warnings = (log: LineLogger): string[] => log.lines.filter((line) => line.startsWith('warn: '));

/** Waits until `raw` has received the chat frame with id `id` (relayed to it) and returns it. */
async function captured(raw: RawPeer, id: string): Promise<ChatFrame> {
  await waitFor(() => chatsTo(raw, (f) => f.id === id).length > 0, `frame ${id} to reach the raw peer`);
  return chatsTo(raw, (f) => f.id === id)[0]!;
}

/** Waits, at most `timeoutMs`, until A has closed the raw peer's socket. */
async function dropped(raw: RawPeer, timeoutMs = 3000): Promise<void> {
  let done = false;
  void raw.closed.then(() => (done = true));
  await waitFor(() => done, 'the raw peer to be disconnected', timeoutMs);
}

/** A fresh data directory, removed after the test (after the nodes: call it after `nodeFactory`). */
function dataDir(t: TestContext): string {
  return tempDir(t, 'forgery');
}

/**
 * Honest node A (logging to `log`) with honest peer B (whose identity the test holds), plus two raw
 * peers of A that answer pings: `attacker`, which relays what a test hands it, and `witness`, which
 * only listens (what A relays) and speaks valid messages of its own when asked.
 */
interface Scene {
  readonly start: ReturnType<typeof nodeFactory>;
  readonly log: LineLogger;
  readonly a: P2PNode;
  readonly b: P2PNode;
  readonly bIdentity: Identity;
  readonly inboxA: Recording<ChatMessage>;
  readonly inboxB: Recording<ChatMessage>;
  readonly eventsA: Recording<NodeEvent>;
  readonly attacker: RawPeer;
  readonly witness: RawPeer;
  /**
   * Sends a valid message of `raw`'s own and waits until A and B have both delivered it. Frames on one
   * link are handled in order, so whatever `raw` sent before has been handled by then: a barrier.
   */
  barrier(raw: RawPeer, text: string): Promise<ChatFrame>;
  /** B sends `text`; resolves once A has delivered it and relayed it to the witness. */
  fromB(text: string): Promise<ChatMessage>;
  /** The next sequence number of `raw` (its own valid messages). */
  nextSeq(raw: RawPeer): number;
}

async function scene(
  t: TestContext,
  options: { a?: NodeOptions; networkKey?: Uint8Array } = {},
): Promise<Scene> {
  const start = nodeFactory(t);
  const log = lineLogger();
  const keyed = options.networkKey === undefined ? {} : { networkKey: options.networkKey };
  const a = await start({ nick: 'a', log, ...keyed, ...options.a });
  const inboxA = record(a.messages$);
  const eventsA = record(a.events$);
  const bIdentity = generateIdentity();
  const b = await start({ nick: 'b', identity: bIdentity, peers: [loopback(a.port)], ...keyed });
  const inboxB = record(b.messages$);
  await waitFor(() => connectedTo(a, [b]) && connectedTo(b, [a]), 'A and B to connect');
  const witness = await rawPeer(t, a.port, { answerPings: true, ...keyed });
  const attacker = await rawPeer(t, a.port, { answerPings: true, ...keyed });
  await waitFor(() => a.peers().length === 3, 'both raw peers to be up');
  const seqs = new Map<RawPeer, number>();
  const nextSeq = (raw: RawPeer): number => {
    const seq = (seqs.get(raw) ?? 0) + 1;
    seqs.set(raw, seq);
    return seq;
  };
  const tag = networkTag(options.networkKey);
  return {
    start,
    log,
    a,
    b,
    bIdentity,
    inboxA,
    inboxB,
    eventsA,
    attacker,
    witness,
    nextSeq,
    async barrier(raw, text) {
      const frame = signedChat(raw.identity, { text, seq: nextSeq(raw) }, tag);
      raw.send(frame);
      await waitFor(
        () => times(inboxA, frame.id) === 1 && times(inboxB, frame.id) === 1,
        `barrier "${text}" to reach A and B`,
      );
      return frame;
    },
    async fromB(text) {
      const message = b.send(text);
      await waitFor(() => times(inboxA, message.id) === 1, `"${text}" to reach A`);
      await captured(witness, message.id);
      return message;
    },
  };
}

/**
 * Asserts that no node delivered and A relayed nothing with text `text`, and that B's messages
 * `real` were each delivered by A exactly once (and relayed to the witness once).
 */
function assertClean(s: Scene, text: string, real: readonly ChatMessage[]): void {
  assert.equal(withText(s.inboxA, text), 0, `A never emits "${text}"`);
  assert.equal(withText(s.inboxB, text), 0, `B never emits "${text}"`);
  assert.equal(chatsTo(s.witness, (f) => f.text === text).length, 0, `A never relays "${text}"`);
  for (const m of real) {
    assert.equal(times(s.inboxA, m.id), 1, `B's "${m.text}" delivered by A once`);
    assert.equal(chatsTo(s.witness, (f) => f.id === m.id).length, 1, `B's "${m.text}" relayed once`);
    assert.equal(times(s.inboxB, m.id), 0, 'B never shows its own message as received');
  }
  const ids = s.inboxA.values.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'A delivered nothing twice');
  assert.equal(s.b.stats().invalidMessages, 0, 'B never saw an invalid message: A relayed none');
}

describe('forgery: a relay cannot make a node deliver what its sender did not send', () => {
  it('(a) drops a message whose sender id is B but whose key and signature are the relay’s own', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');

    // The attacker's own key, a valid signature of it, and B's id as the sender: the claim of `from`
    // is what the key check refuses. Seq 2 is the number B's next message will carry.
    const forged = { ...signedChat(s.attacker.identity, { text: 'forged as b', seq: 2 }), from: s.b.id };
    s.attacker.send(forged);
    await s.barrier(s.attacker, 'barrier a');

    assert.equal(s.a.stats().invalidMessages, 1, 'counted as invalid');
    assert.equal(s.log.count('relayed an invalid message (its sender id is not the id of its key)'), 1);
    const second = await s.fromB('b2');
    assert.equal(second.seq, forged.seq, 'the forged seq did not take the place of the real one');
    assertClean(s, 'forged as b', [first, second]);
    assert.deepEqual(peerIds(s.a).includes(s.attacker.id), true, 'one strike does not disconnect');
  });

  it('(a′) drops a message carrying B’s id and B’s key but signed by someone else', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    const forged = {
      ...signedChat(s.attacker.identity, { text: 'forged with b key', seq: 2 }),
      from: s.b.id,
      key: s.bIdentity.publicKey.toString('hex'),
    };
    s.attacker.send(forged);
    await s.barrier(s.attacker, 'barrier a′');

    assert.equal(s.a.stats().invalidMessages, 1);
    assert.equal(s.log.count('relayed an invalid message (its signature does not verify)'), 1);
    const second = await s.fromB('b2');
    assertClean(s, 'forged with b key', [first, second]);
  });

  it('(b) drops a tampered copy of a message of B (text changed, signature kept) and counts it', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    // A genuine message of B (B's key, B's signature) that A has not seen yet, with its text changed
    // after signing, as a relay holding it first would.
    const genuine = signedChat(s.bIdentity, { text: 'b2 as signed', seq: 2, nick: 'b' });
    s.attacker.send({ ...genuine, text: 'b2 tampered' });
    await s.barrier(s.attacker, 'barrier b');

    assert.equal(s.a.stats().invalidMessages, 1, 'counted as invalid');
    assert.equal(s.log.count('relayed an invalid message (its signature does not verify)'), 1);
    const second = await s.fromB('b2 real');
    assert.equal(second.seq, 2);
    assertClean(s, 'b2 tampered', [first, second]);
    assertClean(s, 'b2 as signed', [first, second]);
  });

  it('(b′) drops a tampered copy of a message of B that A already delivered', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    const real = await captured(s.witness, first.id);
    s.attacker.send({ ...real, text: 'b1 tampered' });
    await s.barrier(s.attacker, 'barrier b′');

    // A holds B's seq 1 already: the cheap "store knows it" check drops the copy before any signature
    // is checked, as it drops the honest duplicates that flooding brings (node.ts: verified once).
    // Dropped either way; not counted, since it was never verified.
    assert.equal(s.a.stats().invalidMessages, 0);
    const second = await s.fromB('b2');
    assertClean(s, 'b1 tampered', [first, second]);
    assert.equal(
      s.a.history(10).find((m) => m.id === first.id)?.text,
      'b1',
      'the history keeps the real text',
    );
  });

  it('(c) drops messages signed for another network and counts them', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    const elsewhere = networkTag(generateNetworkKey());
    // The relay's own message, and a genuine message of B, each signed for another network.
    s.attacker.send(
      signedChat(s.attacker.identity, { text: 'other net (own)', seq: s.nextSeq(s.attacker) }, elsewhere),
    );
    s.attacker.send(signedChat(s.bIdentity, { text: 'other net (b)', seq: 2, nick: 'b' }, elsewhere));
    await s.barrier(s.attacker, 'barrier c');

    assert.equal(s.a.stats().invalidMessages, 2, 'both counted');
    assert.equal(s.log.count('relayed an invalid message (its signature does not verify)'), 1, 'one line');
    const second = await s.fromB('b2');
    assert.equal(second.seq, 2);
    assertClean(s, 'other net (own)', [first, second]);
    assertClean(s, 'other net (b)', [first, second]);
  });

  it('(c′) in a network with a key, drops a message signed for the public network', async (t) => {
    const networkKey = generateNetworkKey();
    const s = await scene(t, { networkKey });
    const first = await s.fromB('b1');
    s.attacker.send(
      signedChat(s.attacker.identity, { text: 'public tag', seq: s.nextSeq(s.attacker) }, PUBLIC_TAG),
    );
    await s.barrier(s.attacker, 'barrier c′');

    assert.equal(s.a.stats().invalidMessages, 1);
    const second = await s.fromB('b2');
    assertClean(s, 'public tag', [first, second]);
  });

  it('(d) drops a replay of a message of B that A delivered, without counting it', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    const old = await captured(s.witness, first.id);
    s.attacker.send(old); // same id, seq, text and signature
    s.attacker.send(old);
    await s.barrier(s.attacker, 'barrier d');

    assert.equal(s.a.stats().invalidMessages, 0, 'a replay of a valid message is not invalid');
    assert.deepEqual(warnings(s.log), []);
    const second = await s.fromB('b2');
    assertClean(s, 'never sent', [first, second]);
    assert.equal(s.a.history(10).filter((m) => m.id === first.id).length, 1, 'held once');
  });

  it('(e) drops a replay of a message of B that left the history window (the per-sender floor)', async (t) => {
    const window = 3;
    const s = await scene(t, { a: { history: { maxMessages: window } } });
    const sent: ChatMessage[] = [];
    for (let i = 1; i <= 2 * window; i++) sent.push(await s.fromB(`b${i}`));
    const old = await captured(s.witness, sent[0]!.id);
    assert.ok(
      s.a.history(100).every((m) => m.id !== old.id),
      'the first message was evicted from A’s window',
    );

    s.attacker.send(old);
    await s.barrier(s.attacker, 'barrier e');

    assert.equal(s.a.stats().invalidMessages, 0, 'a replay of a valid message is not invalid');
    assert.deepEqual(warnings(s.log), []);
    assert.ok(
      s.a.history(100).every((m) => m.id !== old.id),
      'it did not come back into the history',
    );
    const next = await s.fromB('after the replay');
    assertClean(s, 'never sent', [...sent, next]);
  });

  it('(e′) after a restart (no dedup cache left), still drops a replay of an evicted message', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t);
    const history = { maxMessages: 3 };
    const bIdentity = generateIdentity();
    const a = await start({ nick: 'a', dataDir: dir, history });
    const b = await start({ nick: 'b', identity: bIdentity, peers: [loopback(a.port)] });
    await waitFor(() => connectedTo(a, [b]), 'A and B to connect');
    const spy = await rawPeer(t, a.port, { answerPings: true });
    await waitFor(() => a.peers().length === 2, 'the spy to be up');
    // Ten messages: more than twice the window, so A's log is compacted and the floor is written.
    const sent: ChatMessage[] = [];
    for (let i = 1; i <= 10; i++) sent.push(b.send(`b${i}`));
    await waitFor(() => sent.every((m) => chatsTo(spy, (f) => f.id === m.id).length === 1), 'all relayed');
    const old = sent.slice(0, 7).map((m) => chatsTo(spy, (f) => f.id === m.id)[0]!);
    await a.close();

    const log = lineLogger();
    const a2 = await start({ nick: 'a', dataDir: dir, history, log, peers: [loopback(b.port)] });
    const inbox = record(a2.messages$);
    assert.equal(a2.id, a.id, 'the same node, restarted');
    assert.deepEqual(
      a2.history(100).map((m) => m.id),
      sent.slice(7).map((m) => m.id),
      'it holds the last three',
    );
    await waitFor(() => connectedTo(a2, [b]), 'A to reconnect to B');
    const attacker = await rawPeer(t, a2.port, { answerPings: true });
    await waitFor(() => a2.peers().length === 2, 'the attacker to be up');
    for (const frame of old) attacker.send(frame);
    const barrier = signedChat(attacker.identity, { text: 'barrier e′', seq: 1 });
    attacker.send(barrier);
    await waitFor(() => times(inbox, barrier.id) === 1, 'the barrier');

    for (const m of sent) assert.equal(times(inbox, m.id), 0, `"${m.text}" is not delivered again`);
    assert.equal(a2.stats().invalidMessages, 0);
    assert.deepEqual(warnings(log), []);
    assert.equal(a2.stats().historySize, 3);
    assert.ok(
      a2.history(100).every((m) => !old.some((f) => f.id === m.id)),
      'none came back',
    );
    const next = b.send('after the restart');
    await waitFor(() => times(inbox, next.id) === 1, 'B’s next message');
    assert.equal(inbox.values.length, 2, 'only the barrier and B’s new message');
  });
});

describe('forgery: strikes', () => {
  it('disconnects the relay at its third invalid message, logs two lines, and A goes on with B', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    const elsewhere = networkTag(generateNetworkKey());
    const invalid = [
      { ...signedChat(s.attacker.identity, { text: 'strike 1', seq: 2 }), from: s.b.id },
      { ...signedChat(s.bIdentity, { text: 'strike 2 as signed', seq: 2 }), text: 'strike 2' },
      signedChat(s.attacker.identity, { text: 'strike 3', seq: s.nextSeq(s.attacker) }, elsewhere),
    ];

    s.attacker.send(invalid[0]!);
    await waitFor(() => s.a.stats().invalidMessages === 1, 'the first strike');
    s.attacker.send(invalid[1]!);
    await waitFor(() => s.a.stats().invalidMessages === 2, 'the second strike');
    // Two strikes: still connected, and its valid messages still go through.
    await s.barrier(s.attacker, 'still heard');
    assert.ok(peerIds(s.a).includes(s.attacker.id));
    assert.equal(warnings(s.log).length, 1, 'one line for the first offence only');

    s.attacker.send(invalid[2]!);
    await dropped(s.attacker);
    await waitFor(() => downs(s.eventsA).length === 1, 'A to report the attacker down');
    assert.equal(s.a.stats().invalidMessages, 3);
    assert.equal(downs(s.eventsA)[0]!.peer.id, s.attacker.id);
    assert.match(downs(s.eventsA)[0]!.reason, /ERR_BAD_SIGNATURE/);

    const warns = warnings(s.log);
    assert.equal(warns.length, 2, `exactly two warn lines:\n${warns.join('\n')}`);
    const label = s.attacker.id.slice(0, 8);
    assert.match(warns[0]!, /relayed an invalid message \(its sender id is not the id of its key\): dropped/);
    assert.ok(warns[0]!.includes(label), 'the first line names the peer');
    assert.match(warns[1]!, /^warn: disconnecting peer .*ERR_BAD_SIGNATURE: 3 invalid messages/);
    assert.ok(warns[1]!.includes(label), 'the disconnect line names the peer');

    // A keeps chatting with B, both ways, and with the witness.
    const second = await s.fromB('b2');
    assert.equal(second.seq, 2);
    const fromA = s.a.send('a1');
    await waitFor(() => times(s.inboxB, fromA.id) === 1, 'A’s message to reach B');
    await s.barrier(s.witness, 'witness still heard');
    assert.deepEqual(peerIds(s.a), [s.b.id, s.witness.id].sort());
    for (const frame of invalid) assertClean(s, frame.text, [first, second]);
    assertClean(s, 'strike 2 as signed', [first, second]);
  });

  it('charges invalid messages to the connection that delivered them, not to the peer’s other one', async (t) => {
    const s = await scene(t, { a: { timing: { helloTimeoutMs: 60_000 } } });
    const first = await s.fromB('b1');
    // The attacker connects again with the same key: A keeps one connection and retires the other
    // with `bye duplicate`, which a raw peer never acts on: it stays open and its frames are read.
    const again = await rawPeer(t, s.a.port, { identity: s.attacker.identity, answerPings: true });
    const retiredBye = (raw: RawPeer): boolean =>
      raw.frames.some((f) => f.type === 'bye' && f.reason === 'duplicate');
    await waitFor(() => retiredBye(s.attacker) || retiredBye(again), 'A to retire one of the two');
    const [retired, kept] = retiredBye(again) ? [again, s.attacker] : [s.attacker, again];
    for (let i = 0; i < 3; i++) {
      retired.send({ ...signedChat(retired.identity, { text: `strike ${i}`, seq: i + 2 }), from: s.b.id });
    }
    await dropped(retired);
    assert.equal(s.a.stats().invalidMessages, 3);
    // The connection A kept is still up, and carries the attacker's valid messages.
    await s.barrier(kept, 'kept still heard');
    assert.ok(peerIds(s.a).includes(s.attacker.id));
    assert.equal(downs(s.eventsA).length, 0, 'the peer never went down');
    const second = await s.fromB('b2');
    for (let i = 0; i < 3; i++) assertClean(s, `strike ${i}`, [first, second]);
  });

  it('a burst of invalid messages gives one first-offence line and one disconnect line', async (t) => {
    const s = await scene(t);
    const first = await s.fromB('b1');
    for (let i = 0; i < 8; i++) {
      s.attacker.send({
        ...signedChat(s.attacker.identity, { text: `burst ${i}`, seq: i + 2 }),
        from: s.b.id,
      });
    }
    await dropped(s.attacker);
    await waitFor(() => downs(s.eventsA).length === 1, 'A to report the attacker down');
    const invalid = s.a.stats().invalidMessages;
    assert.ok(invalid >= 3 && invalid <= 8, `3 to 8 counted, got ${invalid}`);
    assert.equal(s.log.count('relayed an invalid message'), 1);
    assert.equal(s.log.count('ERR_BAD_SIGNATURE'), 1);
    assert.equal(warnings(s.log).length, 2);

    const second = await s.fromB('b2');
    for (let i = 0; i < 8; i++) assertClean(s, `burst ${i}`, [first, second]);
  });
});

describe('forgery: a tampered copy that arrives first does not shadow the real message', () => {
  it('through resync: B’s real message reaches A after a tampered and a forged copy of it', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const a = await start({ nick: 'a', log });
    const inboxA = record(a.messages$);
    const b = await start({ nick: 'b' }); // not connected to A yet
    const inboxB = record(b.messages$);
    const spy = await rawPeer(t, b.port, { answerPings: true });
    const attacker = await rawPeer(t, a.port, { answerPings: true });
    await waitFor(() => b.peers().length === 1 && a.peers().length === 1, 'the raw peers to be up');

    const real = b.send('the real text');
    const frame = await captured(spy, real.id);
    // The same id and seq, first with the text changed (B's signature kept), then re-signed by the
    // attacker under B's id.
    attacker.send({ ...frame, text: 'poisoned text' });
    await waitFor(() => a.stats().invalidMessages === 1, 'the tampered copy to be refused');
    attacker.send({
      ...signedChat(attacker.identity, { text: 'forged text', seq: real.seq, id: real.id, ts: real.ts }),
      from: b.id,
    });
    await waitFor(() => a.stats().invalidMessages === 2, 'the forged copy to be refused');
    assert.equal(times(inboxA, real.id), 0, 'nothing delivered yet');
    assert.equal(a.history(10).length, 0, 'nothing remembered');

    b.connect(loopback(a.port));
    await waitFor(() => times(inboxA, real.id) === 1, 'the real message to reach A by resync', 5000);
    const barrier = b.send('after');
    await waitFor(() => times(inboxA, barrier.id) === 1, 'B’s next message to reach A');

    assert.equal(times(inboxA, real.id), 1, 'delivered once');
    assert.equal(inboxA.values.find((m) => m.id === real.id)?.text, 'the real text');
    assert.equal(withText(inboxA, 'poisoned text') + withText(inboxA, 'forged text'), 0);
    assert.equal(withText(inboxB, 'poisoned text') + withText(inboxB, 'forged text'), 0);
    assert.equal(a.history(10).find((m) => m.id === real.id)?.text, 'the real text');
    assert.equal(
      chatsTo(attacker, (f) => f.id === real.id && f.text === 'the real text').length,
      1,
      'A relays the real one, once',
    );
    assert.ok(peerIds(a).includes(attacker.id), 'two strikes: the attacker is still connected');
    assert.equal(b.stats().invalidMessages, 0);
  });

  it("a sender that gives its own message the id of another sender's cannot hide that message", async (t) => {
    const s = await scene(t);
    const carol = generateIdentity(); // an author elsewhere, reaching A through relays
    const genuine = signedChat(carol, { text: 'carol says hi', seq: 1, nick: 'carol' });
    // The attacker's own message, validly signed, under the id of carol's, ahead of it.
    const squatter = signedChat(s.attacker.identity, {
      text: 'squatting',
      seq: s.nextSeq(s.attacker),
      id: genuine.id,
    });
    s.attacker.send(squatter);
    await waitFor(
      () => withText(s.inboxA, 'squatting') === 1 && withText(s.inboxB, 'squatting') === 1,
      'the squatter at A and B',
    );
    s.witness.send(genuine);
    s.witness.send(genuine); // and a copy of it
    await waitFor(
      () => withText(s.inboxA, 'carol says hi') === 1 && withText(s.inboxB, 'carol says hi') === 1,
      "carol's message at A and B",
    );
    await s.barrier(s.witness, 'barrier squat');
    for (const inbox of [s.inboxA, s.inboxB]) {
      assert.equal(withText(inbox, 'carol says hi'), 1, 'once');
      assert.equal(withText(inbox, 'squatting'), 1, 'once');
    }
    assert.equal(s.a.stats().invalidMessages, 0, 'both are valid messages');
  });

  it('live: a tampered copy relayed first, then the genuine one from an honest relay', async (t) => {
    const s = await scene(t);
    const carol = generateIdentity(); // an author elsewhere in the network, reaching A through relays
    const genuine = signedChat(carol, { text: 'carol says hi', seq: 1, nick: 'carol' });
    s.attacker.send({ ...genuine, text: 'carol says bye' });
    await waitFor(() => s.a.stats().invalidMessages === 1, 'the tampered copy to be refused');
    s.witness.send(genuine); // the honest relay, later
    await waitFor(
      () => times(s.inboxA, genuine.id) === 1 && times(s.inboxB, genuine.id) === 1,
      'the genuine message to reach A and B',
    );
    await s.barrier(s.attacker, 'barrier live');

    for (const inbox of [s.inboxA, s.inboxB]) {
      assert.equal(times(inbox, genuine.id), 1);
      assert.equal(inbox.values.find((m) => m.id === genuine.id)?.text, 'carol says hi');
      assert.equal(withText(inbox, 'carol says bye'), 0);
    }
    assert.equal(
      chatsTo(s.attacker, (f) => f.id === genuine.id).length,
      1,
      'relayed on to the attacker once',
    );
    assert.equal(chatsTo(s.witness, (f) => f.id === genuine.id).length, 0, 'not echoed to its relay');
    assert.equal(s.b.stats().invalidMessages, 0);
  });
});
