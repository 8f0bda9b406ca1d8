/**
 * Relaying with neighbour knowledge, and the anti-entropy that makes it safe, end to end: real nodes
 * on 127.0.0.1 and a raw peer (spec/helpers/nodes.ts) whose peer list a test chooses.
 *
 * A node does not relay a message to the peers that the peer it came from says it is connected to
 * (they have it from that peer). A peer list can be stale or a lie: then a node misses the message,
 * and the anti-entropy sync (after the talk pauses, each side asks the other for what it lacks)
 * fetches it. A message its author delivered itself and that went nowhere was kept without its
 * signature checked; it is checked before a resync sends it on.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { ChatMessage, NodeTiming, P2PNode } from '../../lib/node/node.js';
import {
  MAX_TEXT_LENGTH,
  serializeFrame,
  type ChatFrame,
  type PeersFrame,
  type SyncFrame,
} from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import {
  askSync,
  connectedTo,
  lineLogger,
  liveTimers,
  loopback,
  nodeFactory,
  rawPeer,
  record,
  signedChat,
  waitFor,
  type LineLogger,
  type RawPeer,
  type Recording,
} from '../helpers/nodes.js';

/** Anti-entropy period of the nodes here: long enough to tell a relay from a repair apart. */
const PERIOD_MS = 400;

interface Scene {
  readonly x: P2PNode;
  readonly y: P2PNode;
  readonly inboxX: Recording<ChatMessage>;
  readonly inboxY: Recording<ChatMessage>;
  readonly logX: LineLogger;
  /**
   * A raw peer connected to X and to Y (one identity, two links), whose peer list tells X that it is
   * connected to Y: true, and Y's own list confirms it. It sends what a test hands it to X only, as
   * a peer that fails to relay would.
   */
  readonly liar: RawPeer;
  /** The raw peer's link to Y (same identity), unless it is linked to X only. */
  readonly liarAtY: RawPeer | undefined;
}

/** A peer list naming `nodes` (none: an empty list). */
const listing = (...nodes: P2PNode[]): PeersFrame => ({
  type: 'peers',
  peers: nodes.map((node) => ({ id: node.id, addr: `127.0.0.1:${node.port}` })),
});

/**
 * X and Y connected; a raw peer connected to X, and (unless `linkedToY` is false) to Y too, that
 * sends to X only and tells X it is connected to Y.
 */
async function scene(t: TestContext, linkedToY = true, timing: NodeTiming = {}): Promise<Scene> {
  const start = nodeFactory(t);
  const logX = lineLogger();
  timing = { antiEntropyMs: PERIOD_MS, peerListDelayMs: 1, ...timing };
  const x = await start({ nick: 'x', log: logX, timing });
  const y = await start({ nick: 'y', peers: [loopback(x.port)], timing });
  await waitFor(() => connectedTo(x, [y]) && connectedTo(y, [x]), 'X and Y to connect');
  const inboxX = record(x.messages$);
  const inboxY = record(y.messages$);
  const liar = await rawPeer(t, x.port, { answerPings: true });
  liar.send(listing(y));
  let liarAtY: RawPeer | undefined;
  if (linkedToY) {
    liarAtY = await rawPeer(t, y.port, { answerPings: true, identity: liar.identity });
    await waitFor(() => x.peers().length === 2 && y.peers().length === 2, 'the raw peer up at X and Y');
    // Y's list naming the raw peer goes to all its peers at once, after the one it sent with its
    // hello: once the raw peer has the second, X has it too.
    await waitFor(() => liarAtY!.count('peers') >= 2, "Y's peer list naming the raw peer");
  } else await waitFor(() => x.peers().length === 2, 'the raw peer up at X');
  y.send('barrier'); // behind Y's list on the Y-X link, and after the raw peer's list reached X
  await waitFor(() => inboxX.values.some((m) => m.text === 'barrier'), 'X to have Y’s list');
  return { x, y, inboxX, inboxY, logX, liar, liarAtY };
}

/** When `inbox` delivered the message with text `text`, or undefined. */
const arrival = (inbox: Recording<ChatMessage>, text: string): number | undefined =>
  inbox.at[inbox.values.findIndex((m) => m.text === text)];

const times = (inbox: Recording<ChatMessage>, text: string): number =>
  inbox.values.filter((m) => m.text === text).length;

describe('relay with neighbour knowledge, and anti-entropy', () => {
  it("does not relay to a peer the sender's peer list names; anti-entropy fetches it when the sender did not send it there", async (t) => {
    const { inboxX, inboxY, liar } = await scene(t);
    liar.send(signedChat(liar.identity, { text: 'only to X', seq: 1 }));
    await waitFor(() => times(inboxX, 'only to X') === 1, 'X to show the message');
    await waitFor(
      () => times(inboxY, 'only to X') === 1,
      'Y to fetch it by anti-entropy',
      5 * PERIOD_MS + 3000,
    );
    // X did not relay it (the raw peer is connected to Y): Y had it from an anti-entropy sync, whose
    // answer leaves out what the answering node took in during the last half period.
    const late = arrival(inboxY, 'only to X')! - arrival(inboxX, 'only to X')!;
    assert.ok(late >= PERIOD_MS / 2 - 20, `Y got it ${late} ms after X: relayed, not repaired`);
    assert.equal(liar.frames.filter((f) => f.type === 'chat').length, 0, 'nothing goes back to its author');
    assert.equal(times(inboxY, 'only to X'), 1, 'once');
  });

  it('relays at once to a peer the sender claims but that does not list the sender', async (t) => {
    const { inboxX, inboxY, liar } = await scene(t, false); // it claims Y; Y does not list it
    liar.send(signedChat(liar.identity, { text: 'claimed', seq: 1 }));
    await waitFor(() => times(inboxY, 'claimed') === 1, 'Y to get the relayed message');
    const late = arrival(inboxY, 'claimed')! - arrival(inboxX, 'claimed')!;
    assert.ok(late < PERIOD_MS / 2 - 20, `relayed at once, not repaired (${late} ms)`);
  });

  it('relays as before to a peer the list does not name', async (t) => {
    const { inboxX, inboxY, liar } = await scene(t);
    liar.send({ type: 'peers', peers: [] }); // the latest list replaces the earlier one
    liar.send(signedChat(liar.identity, { text: 'to all', seq: 1 }));
    await waitFor(() => times(inboxY, 'to all') === 1, 'Y to get the relayed message');
    const late = arrival(inboxY, 'to all')! - arrival(inboxX, 'to all')!;
    assert.ok(late < PERIOD_MS / 2 - 20, `relayed at once, not repaired (${late} ms)`);
  });

  it('shows a message its author delivered directly even when it went nowhere, but never sends a bad signature on', async (t) => {
    const { x, inboxX, inboxY, logX, liar } = await scene(t);
    const forged: ChatFrame = {
      ...signedChat(liar.identity, { text: 'bad signature', seq: 1 }),
      sig: 'A'.repeat(86),
    };
    liar.send(forged);
    // The channel proves who wrote it; nobody else needs it, so its signature was not checked.
    await waitFor(() => times(inboxX, 'bad signature') === 1, 'X to show it');
    // Anti-entropy: Y asks X, X checks the held message before sending it, and keeps it back.
    await waitFor(
      () =>
        logX.lines.some(
          (l) => l.includes('resync: not sending a held message') && l.includes('does not verify'),
        ),
      'X to refuse to send it on',
      5 * PERIOD_MS + 3000,
    );
    liar.send(signedChat(liar.identity, { text: 'good one', seq: 2 }));
    await waitFor(() => times(inboxY, 'good one') === 1, 'a valid message to reach Y', 5 * PERIOD_MS + 3000);
    assert.equal(times(inboxY, 'bad signature'), 0);
    assert.equal(x.stats().invalidMessages, 0, 'not counted against the liar: it was never relayed');
  });
});

describe('gap repair', () => {
  /** Long, so that only gap repair can fill a hole within a test's wait. */
  const LONG_PERIOD_MS = 60_000;
  const GAP_MS = 150;
  const gapScene = (t: TestContext, gapRepairMs = GAP_MS): Promise<Scene> =>
    scene(t, true, { antiEntropyMs: LONG_PERIOD_MS, gapRepairMs });

  it('asks for a missing message once a later one of its sender arrived, long before anti-entropy', async (t) => {
    const { x, y, inboxX, inboxY, liar } = await gapScene(t);
    liar.send(listing()); // X relays its messages to Y
    liar.send(signedChat(liar.identity, { text: 'first', seq: 1 }));
    await waitFor(() => times(inboxY, 'first') === 1, 'Y to get the first message');
    liar.send(listing(y)); // now it does not
    liar.send(signedChat(liar.identity, { text: 'skipped', seq: 2 }));
    await waitFor(() => times(inboxX, 'skipped') === 1, 'X to show the second');
    liar.send(listing());
    liar.send(signedChat(liar.identity, { text: 'relayed', seq: 3 }));
    await waitFor(() => times(inboxY, 'relayed') === 1, 'Y to get the third');
    assert.equal(times(inboxY, 'skipped'), 0, 'the second is missing at Y');
    await waitFor(() => times(inboxY, 'skipped') === 1, 'Y to fetch the missing one', 3_000);
    const late = arrival(inboxY, 'skipped')! - arrival(inboxY, 'relayed')!;
    assert.ok(late >= GAP_MS - 20, `fetched ${late} ms after the later one: not before the hole had lasted`);
    assert.ok(late < LONG_PERIOD_MS, 'by gap repair, not anti-entropy');
    assert.equal(y.stats().gapRepairs, 1, 'one sync, to the peer that delivered the later message');
    assert.equal(x.stats().gapRepairs, 0);
    await delay(3 * GAP_MS);
    assert.equal(times(inboxY, 'skipped'), 1, 'once');
    assert.equal(y.stats().gapRepairs, 1, 'no sync once the hole is filled');
  });

  it('asks every peer when the peer that delivered the later message does not have it', async (t) => {
    const { y, inboxX, inboxY, liar, liarAtY } = await gapScene(t);
    liarAtY!.send(signedChat(liar.identity, { text: 'first', seq: 1 }));
    await waitFor(() => times(inboxY, 'first') === 1, 'Y to get the first message');
    liar.send(signedChat(liar.identity, { text: 'to X only', seq: 2 }));
    await waitFor(() => times(inboxX, 'to X only') === 1, 'X to show the second');
    // The third reaches Y straight from the raw peer (its second link), which answers no sync.
    liarAtY!.send(signedChat(liar.identity, { text: 'straight to Y', seq: 3 }));
    await waitFor(() => times(inboxY, 'straight to Y') === 1, 'Y to get the third');
    await waitFor(() => times(inboxY, 'to X only') === 1, 'Y to fetch the second from X', 3_000);
    assert.equal(y.stats().gapRepairs, 2, 'the raw peer first, then every peer');
  });

  it('watches a hole that opened while another was watched, once that one turns up late', async (t) => {
    const { y, inboxX, inboxY, liar, liarAtY } = await gapScene(t);
    const at = liarAtY!;
    at.send(signedChat(liar.identity, { text: 'one', seq: 1 }));
    await waitFor(() => times(inboxY, 'one') === 1, 'Y to get seq 1');
    // Seq 2 and 4 reach X only; X leaves Y to the raw peer, which claims a link to Y.
    liar.send(signedChat(liar.identity, { text: 'late', seq: 2 }));
    liar.send(signedChat(liar.identity, { text: 'lost', seq: 4 }));
    await waitFor(() => times(inboxX, 'lost') === 1, 'X to have seq 4');
    at.send(signedChat(liar.identity, { text: 'three', seq: 3 })); // Y watches 2
    at.send(signedChat(liar.identity, { text: 'five', seq: 5 })); // 4 is missing too: not watched yet
    at.send(signedChat(liar.identity, { text: 'late', seq: 2 })); // 2 turns up on its own
    await waitFor(() => times(inboxY, 'late') === 1, 'seq 2 to reach Y');
    await waitFor(() => times(inboxY, 'lost') === 1, 'Y to fetch seq 4 from X', 3_000);
    // Watched from the first check on: the raw peer (which delivered the late one) first, then all.
    assert.equal(y.stats().gapRepairs, 2);
  });

  it('asks at once for the rest of a skipped run that the answer held back as too recent', async (t) => {
    const gapMs = 400;
    const { y, inboxX, inboxY, liar } = await gapScene(t, gapMs);
    const skipY = listing(y);
    const relayToY = listing();
    const send = (text: string, seq: number): void => liar.send(signedChat(liar.identity, { text, seq }));
    liar.send(relayToY);
    send('one', 1);
    await waitFor(() => times(inboxY, 'one') === 1, 'Y to get seq 1');
    liar.send(skipY);
    send('two', 2);
    liar.send(relayToY);
    send('three', 3); // Y watches 2
    await waitFor(() => times(inboxY, 'three') === 1, 'Y to get seq 3');
    const watched = Date.now();
    await delay(gapMs - 150);
    liar.send(skipY);
    send('four', 4); // X takes it in ~150 ms before Y asks: too recent for that answer
    liar.send(relayToY);
    send('five', 5);
    await waitFor(() => times(inboxX, 'five') === 1 && times(inboxY, 'two') === 1, 'Y to fetch seq 2');
    assert.equal(times(inboxY, 'four'), 0, 'held back as too recent');
    await waitFor(() => times(inboxY, 'four') === 1, 'Y to fetch seq 4', 3_000);
    // Asked for when the check after the first answer found seq 2 in: two periods after the watch
    // began, not three (a fresh watch of seq 4, then its own check).
    const took = arrival(inboxY, 'four')! - watched;
    assert.ok(took < 2.5 * gapMs, `seq 4 came ${took} ms after the watch began`);
    assert.equal(y.stats().gapRepairs, 2);
  });

  it('leaves a sender’s holes to anti-entropy for a while once no peer had one', async (t) => {
    const { y, inboxY, liar, liarAtY } = await gapScene(t);
    const send = (text: string, seq: number): void => liarAtY!.send(signedChat(liar.identity, { text, seq }));
    // A sender that skips sequence numbers: nobody ever has 2, nor 4.
    send('one', 1);
    send('three', 3);
    await waitFor(() => times(inboxY, 'three') === 1, 'Y to get seq 3');
    await waitFor(() => y.stats().gapRepairs === 2, 'Y to ask the raw peer, then every peer');
    await delay(2 * GAP_MS); // the check after: given up
    send('five', 5);
    await waitFor(() => times(inboxY, 'five') === 1, 'Y to get seq 5');
    await delay(4 * GAP_MS);
    assert.equal(y.stats().gapRepairs, 2, 'no sync for the hole at 4');
  });

  it('watches the hole of another sender that opened while it gave up on one', async (t) => {
    const { y, inboxX, inboxY, liar, liarAtY } = await gapScene(t);
    const other = generateIdentity();
    // The raw peer skips its own seq 2: nobody ever has it.
    liarAtY!.send(signedChat(liar.identity, { text: 'one', seq: 1 }));
    liarAtY!.send(signedChat(liar.identity, { text: 'three', seq: 3 }));
    await waitFor(() => y.stats().gapRepairs === 2, 'Y to ask the raw peer, then every peer');
    // Then, before Y gives up on it, another sender's seq 2 reaches X only, and its 1 and 3 reach Y.
    liar.send(signedChat(other, { text: 'other two', seq: 2 }));
    await waitFor(() => times(inboxX, 'other two') === 1, 'X to have the other sender’s seq 2');
    liarAtY!.send(signedChat(other, { text: 'other one', seq: 1 }));
    liarAtY!.send(signedChat(other, { text: 'other three', seq: 3 }));
    await waitFor(() => times(inboxY, 'other three') === 1, 'Y to get seq 3 of the other sender');
    // Gap repair (periods of 150 ms), not anti-entropy (a minute).
    await waitFor(() => times(inboxY, 'other two') === 1, 'Y to fetch the other sender’s seq 2', 3_000);
  });

  it('stops watching when the node closes: no sync, no error after close', async (t) => {
    const { y, inboxY, liar, liarAtY } = await gapScene(t);
    liarAtY!.send(signedChat(liar.identity, { text: 'one', seq: 1 }));
    liarAtY!.send(signedChat(liar.identity, { text: 'three', seq: 3 })); // Y watches 2
    await waitFor(() => times(inboxY, 'three') === 1, 'Y to get seq 3');
    // Y would ask the raw peer that delivered seq 3 (X has the hole too, and repairs its own).
    const syncs = liarAtY!.count('sync');
    await y.close();
    await delay(3 * GAP_MS);
    assert.equal(y.stats().gapRepairs, 0, 'the watch ended with the node');
    assert.equal(liarAtY!.count('sync'), syncs, 'no sync for the hole');
  });

  it('sends no sync while a sender’s messages arrive in order', async (t) => {
    const start = nodeFactory(t);
    const timing = { antiEntropyMs: LONG_PERIOD_MS, gapRepairMs: GAP_MS };
    const a = await start({ nick: 'a', timing });
    const b = await start({ nick: 'b', peers: [loopback(a.port)], timing });
    const c = await start({ nick: 'c', peers: [loopback(b.port)], maxPeers: 1, timing });
    await waitFor(() => connectedTo(a, [b]) && connectedTo(c, [b]), 'the line A-B-C');
    const inboxC = record(c.messages$);
    for (let i = 0; i < 200; i++) a.send(`line ${i}`);
    await waitFor(() => inboxC.values.length === 200, 'C to get every line');
    await delay(2 * GAP_MS);
    assert.deepEqual(
      [a, b, c].map((n) => n.stats().gapRepairs),
      [0, 0, 0],
    );
  });
});

describe('sendAll', () => {
  it('sends a batch in order under one signature; every message is checked and shown once, and relayed', async (t) => {
    const start = nodeFactory(t);
    const a = await start({ nick: 'a' });
    const b = await start({ nick: 'b', peers: [loopback(a.port)] });
    const c = await start({ nick: 'c', peers: [loopback(b.port)], maxPeers: 1 }); // C hears A via B only
    await waitFor(() => connectedTo(a, [b]) && connectedTo(c, [b]), 'the line A-B-C');
    const inboxC = record(c.messages$);
    const texts = Array.from({ length: 50 }, (_, i) => `line ${i}`);
    const sent = a.sendAll(texts);
    assert.deepEqual(
      sent.map((m) => m.text),
      texts,
    );
    assert.deepEqual(
      sent.map((m) => m.seq),
      texts.map((_, i) => sent[0]!.seq + i),
    );
    await waitFor(() => inboxC.values.length === texts.length, 'C to get the batch');
    assert.deepEqual(
      inboxC.values.map((m) => m.text),
      texts,
    );
    assert.equal(b.stats().invalidMessages + c.stats().invalidMessages, 0);
    assert.throws(() => a.sendAll(['fine', '']), RangeError, 'an empty text refuses the batch');
    assert.equal(a.history(100).length, texts.length, 'nothing of the refused batch was sent');
  });
});

describe('a long paste', () => {
  it('is signed 64 messages at a time: each frame proves its place in its own slice, in order', async (t) => {
    const start = nodeFactory(t);
    const a = await start({ nick: 'a' });
    const watcher = await rawPeer(t, a.port, { answerPings: true });
    await waitFor(() => a.peers().length === 1, 'the watcher to be up');
    const texts = Array.from({ length: 150 }, (_, i) => `line ${i}`);
    a.sendAll(texts);
    const chats = (): ChatFrame[] => watcher.frames.filter((f): f is ChatFrame => f.type === 'chat');
    await waitFor(() => chats().length === texts.length, 'every line to reach the watcher');
    const got = chats();
    assert.deepEqual(
      got.map((f) => f.text),
      texts,
    );
    const slices = [...new Set(got.map((f) => f.sig))].map((sig) => got.filter((f) => f.sig === sig));
    assert.deepEqual(
      slices.map((slice) => slice.length),
      [64, 64, 22],
    );
    for (const slice of slices) {
      assert.deepEqual(
        slice.map((f) => [f.proof?.i, f.proof?.n]),
        slice.map((_, i) => [i, slice.length]),
      );
    }
  });
});

describe('sync frames', () => {
  it('stay within half the frame limit however many senders and gaps the node holds, most recent senders first', async (t) => {
    const start = nodeFactory(t);
    const maxFrameBytes = 8 * 1024;
    const x = await start({ nick: 'x', maxFrameBytes, timing: { antiEntropyMs: PERIOD_MS } });
    const inboxX = record(x.messages$);
    const feeder = await rawPeer(t, x.port, { answerPings: true });
    await waitFor(() => x.peers().length === 1, 'the feeder to be up');
    // 120 senders, each with a gap (seq 1 and 3): marks with ranges, ~10 KB of them in all.
    const authors = Array.from({ length: 120 }, () => generateIdentity());
    for (const [k, author] of authors.entries()) {
      for (const seq of [1, 3]) feeder.send(signedChat(author, { text: `s${k}#${seq}`, seq }));
    }
    await waitFor(() => inboxX.values.length === 240, 'X to take in every message');
    const watcher = await rawPeer(t, x.port, { answerPings: true });
    await waitFor(() => watcher.frames.some((f) => f.type === 'sync'), 'the sync X sends a new peer');
    const sync = watcher.frames.find((f): f is SyncFrame => f.type === 'sync')!;
    const bytes = serializeFrame(sync).length;
    assert.ok(bytes <= maxFrameBytes / 2, `a sync of ${bytes} bytes`);
    assert.ok(sync.marks.length > 10 && sync.marks.length < 120, `${sync.marks.length} marks`);
    assert.deepEqual(
      sync.marks.at(-1),
      { from: authors.at(-1)!.id, seq: 1, have: [[3, 3]] },
      'the latest sender last',
    );
    assert.ok(x.peers().length === 2, 'X is up, with both peers');
  });
});

describe('answering a sync', () => {
  /** X with five messages of its own, and a raw peer that has read them (in packs, with `pack`). */
  async function held(
    t: TestContext,
    pack?: number,
  ): Promise<{ x: P2PNode; peer: RawPeer; before: number; seqs: number[] }> {
    const start = nodeFactory(t);
    const x = await start({ nick: 'x' });
    const peer = await rawPeer(t, x.port, { answerPings: true, ...(pack !== undefined ? { pack } : {}) });
    await waitFor(() => x.peers().length === 1, 'the raw peer to be up');
    const seqs = x.sendAll(['m1', 'm2', 'm3', 'm4', 'm5']).map((m) => m.seq);
    await waitFor(() => peer.count('chat') === 5, 'the raw peer to read the five messages');
    const before = peer.frames.findIndex((f) => f.type === 'chat'); // frames read before them
    return { x, peer, before, seqs };
  }

  /** The seqs of the messages X sends back for `sync` (its whole answer: {@link askSync}). */
  const ask = async (peer: RawPeer, sync: Omit<SyncFrame, 'type'>): Promise<number[]> =>
    (await askSync(peer, sync)).map((f) => f.seq);

  it('sends nothing stamped before the sync’s since: older than the asking node’s window takes in', async (t) => {
    const { x, peer, seqs } = await held(t);
    const stamps = x.history(5).map((m) => m.ts);
    const newest = Math.max(...stamps);
    const oldest = Math.min(...stamps);
    assert.deepEqual(await ask(peer, { marks: [], since: newest + 1 }), [], 'all older: none');
    assert.deepEqual(await ask(peer, { marks: [], since: oldest }), seqs, 'at or after: all five');
    assert.deepEqual(await ask(peer, { marks: [] }), seqs, 'without since: any age');
  });

  for (const pack of [undefined, 64 * 1024]) {
    it(`leaves out what it wrote on the link after the frames the peer had read (rx): those are on their way${pack !== undefined ? '; frames in packs count one by one' : ''}`, async (t) => {
      const { peer, before, seqs } = await held(t, pack);
      if (pack !== undefined) assert.ok(peer.received.packs > 0, 'the five came in a pack');
      // As if the five were still in flight when the peer wrote its sync: nothing is sent again.
      assert.deepEqual(await ask(peer, { marks: [], rx: before }), []);
      // Having read them all, the peer lacks them (it dropped them, say): all five are sent again.
      assert.deepEqual(await ask(peer, { marks: [], rx: peer.frames.length }), seqs);
      // Read all but the last two frames (the fifth message, sent again, and the pong): the fifth
      // is on its way, the other four are sent again.
      assert.deepEqual(await ask(peer, { marks: [], rx: peer.frames.length - 2 }), seqs.slice(0, 4));
      // Without rx the node cannot tell: it sends what the marks lack, as before.
      assert.deepEqual(await ask(peer, { marks: [] }), seqs);
    });
  }

  it('leaves no resync turn behind when the connection closes while its backlog waits for the peer to drain', async (t) => {
    const timers = liveTimers(t);
    const start = nodeFactory(t);
    const x = await start({ nick: 'x' });
    // 12 MB of history, more than loopback's socket buffers take from a peer that reads nothing:
    // the resync fills the outbox to its bound and waits (10 ms at a time) for the peer to drain it.
    const line = '€'.repeat(MAX_TEXT_LENGTH);
    x.sendAll(Array.from({ length: 240 }, () => line));
    const peer = await rawPeer(t, x.port, { answerPings: true, binary: true });
    await waitFor(() => x.peers().length === 1, 'the raw peer to be up');
    peer.socket.pause();
    peer.send({ type: 'sync', marks: [] });
    await waitFor(() => timers.count(10) === 1, 'the resync to wait for the peer', 10_000);
    let left: number | undefined;
    const downs = x.events$.subscribe((event) => {
      if (event.type === 'peer-down') left = timers.count(10);
    });
    t.after(() => downs.unsubscribe());
    peer.socket.destroy();
    await waitFor(() => left !== undefined, 'the raw peer to be down');
    // Before: the wait outlived the connection, and its turn came after the close.
    assert.equal(left, 0, 'resync waits left once the connection closed');
    assert.equal(timers.count(10), 0);
  });

  it('sends a busy peer only what fills its gaps, and the rest once it asks without busy', async (t) => {
    const { x, peer, seqs } = await held(t);
    const [s1, s2, s3, s4, s5] = seqs as [number, number, number, number, number];
    const gap = [{ from: x.id, seq: s1, have: [[s3, s3]] as [number, number][] }];
    const rx = (): number => peer.frames.length;
    assert.deepEqual(await ask(peer, { marks: gap, busy: true, rx: rx() }), [s2], 'the gap only');
    assert.deepEqual(
      await ask(peer, { marks: [{ from: x.id, seq: s3 }], busy: true, rx: rx() }),
      [],
      'no gap',
    );
    assert.deepEqual(await ask(peer, { marks: gap, rx: rx() }), [s2, s4, s5], 'not busy: all it lacks');
    assert.deepEqual(await ask(peer, { marks: gap, rx: rx(), max: 2 }), [s2, s4], 'the oldest two');
  });
});
