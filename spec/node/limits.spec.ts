/**
 * The node's abuse limits, end to end on 127.0.0.1 with the limits turned down so a test can reach
 * them: a sender over its message rate has its excess dropped (not relayed) while every other
 * sender's messages flow; a peer over its frame rate is slowed (its socket read later) but loses
 * nothing; dials in flight never exceed the cap; learned addresses never exceed the table size.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import type { ChatMessage, NodeOptions, P2PNode } from '../../lib/node/node.js';
import { serializeFrame, type ChatFrame, type PeerEntry, type SyncFrame } from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import {
  deadEnds,
  freePort,
  HOST,
  lineLogger,
  listenOn,
  loopback,
  nodeFactory,
  rawPeer,
  record,
  signedChat,
  waitFor,
  type RawPeer,
  type Recording,
} from '../helpers/nodes.js';

const fromSender = (inbox: Recording<ChatMessage>, id: string): ChatMessage[] =>
  inbox.values.filter((m) => m.from === id);

/** Sends `n` valid messages of `raw`'s own at once, seq from `firstSeq`. */
function burst(raw: RawPeer, n: number, firstSeq = 1, tag = 'burst'): void {
  for (let i = 0; i < n; i++) raw.send(signedChat(raw.identity, { text: `${tag} ${i}`, seq: firstSeq + i }));
}

describe('abuse limits', () => {
  it("drops a sender's messages over its rate, logs it once, and keeps every other sender flowing", async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const h = await start({ nick: 'h', log, limits: { senderMessages: { perSecond: 5, burst: 20 } } });
    const b = await start({ nick: 'b', peers: [loopback(h.port)] });
    const inboxB = record(b.messages$);
    const raw = await rawPeer(t, h.port, { answerPings: true });
    await waitFor(() => h.peers().length === 2, 'h to have b and the raw peer');

    const started = Date.now();
    burst(raw, 200);
    h.send('honest from h');
    await waitFor(() => inboxB.values.some((m) => m.text === 'honest from h'), 'the honest message at b');
    // Every one of the 200 is either held (history, beside h's own message) or dropped over the rate.
    const handled = (): number => h.stats().rateLimitedMessages + h.stats().historySize - 1;
    await waitFor(() => handled() === 200, 'h to handle all 200', 5000);
    const seconds = (Date.now() - started) / 1000;
    const accepted = h.stats().historySize - 1;
    // 20 at once, then 5/s for however long the burst took to arrive.
    assert.ok(accepted >= 20 && accepted <= 20 + 5 * seconds + 1, `${accepted} of 200 in ${seconds} s`);
    await waitFor(() => fromSender(inboxB, raw.id).length === accepted, 'b to get what h accepted');
    assert.equal(h.stats().invalidMessages, 0);
    assert.equal(log.count('is over 5 messages/s'), 1, log.lines.join('\n'));
    assert.ok(
      h.peers().some((p) => p.id === raw.id),
      'the sender is slowed, not disconnected',
    );

    // Its budget refills: a second later its messages pass again.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    raw.send(signedChat(raw.identity, { text: 'after a pause', seq: 1000 }));
    await waitFor(() => inboxB.values.some((m) => m.text === 'after a pause'), 'the later message at b');
  });

  for (const packed of [false, true]) {
    it(`slows a peer over its frame rate without losing anything${packed ? ', counting each frame of a pack' : ''}`, async (t) => {
      const start = nodeFactory(t);
      const h = await start({ nick: 'h', limits: { peerFrames: { perSecond: 1000, burst: 50 } } });
      const b = await start({ nick: 'b', peers: [loopback(h.port)] });
      const inboxB = record(b.messages$);
      const raw = await rawPeer(t, h.port, { answerPings: true });
      await waitFor(() => h.peers().length === 2, 'h to have b and the raw peer');

      // The limit applies between socket reads and packs (up to 64 KiB each, handled whole): 2,000 frames
      // of ~450 bytes span many reads.
      // Packed: 20 packs of 100 frames, each a message of ~45 KB.
      const sent = Date.now();
      if (packed) {
        for (let i = 0; i < 2000; i += 100) {
          const frames = Array.from({ length: 100 }, (_, j) =>
            serializeFrame(signedChat(raw.identity, { text: `burst ${i + j}`, seq: 1 + i + j })),
          );
          raw.sendPack(frames);
        }
      } else burst(raw, 2000);
      await waitFor(() => fromSender(inboxB, raw.id).length === 2000, 'all 2,000 at b', 15_000);
      const took = Date.now() - sent;
      // (2,000 - 50) frames over the burst at 1,000/s: 1.95 s, less one read's worth and a margin.
      assert.ok(took >= 1500, `2,000 frames took ${took} ms`);
      assert.equal(new Set(fromSender(inboxB, raw.id).map((m) => m.seq)).size, 2000, 'each once');
      assert.equal(h.stats().rateLimitedMessages, 0);
    });
  }

  it('answers a flood of sync frames at its sync rate, one backlog at a time, not with the history per frame', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({ log, timing: { peerTimeoutMs: 60_000 } });
    const window = 2000;
    node.sendAll(Array.from({ length: window }, (_, i) => `message ${i}`));
    const raw = await rawPeer(t, node.port, { answerPings: true, pack: 65_536 });
    await waitFor(() => node.peers().length === 1, 'the peer');
    // 500 syncs asking for everything (26 bytes each), in one pack: 1,300 times what a node does.
    const sync = serializeFrame({ type: 'sync', marks: [] });
    const flooded = Date.now();
    raw.sendPack(Array.from({ length: 500 }, () => sync));
    await waitFor(() => raw.count('chat') >= window, 'the history');
    // Then quiet: no chat frame for 500 ms (the answers are done), within 20 s.
    for (let last = -1, round = 0; raw.count('chat') !== last; round++) {
      assert.ok(round < 40, `still sending after ${round / 2} s: ${raw.count('chat')} frames`);
      last = raw.count('chat');
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const answers = log.count('resync: sending');
    const seconds = (Date.now() - flooded) / 1000;
    // The burst of 20 at once, then at most 10/s; each answer takes the place of the one before.
    assert.ok(answers <= 21 + 10 * seconds, `${answers} answers in ${seconds} s`);
    const copies = raw.count('chat') / window;
    // The 20 of the burst come in one turn, each in place of the one before: one backlog goes
    // out, then the one kept for a token. Without the rate and the single backlog: 500.
    assert.ok(copies <= 3, `${copies} copies of the history`);
  });

  it('a narrower sync (a gap repair: busy, minAgeMs) does not cut the rest of an older full backlog short', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ nick: 'n', timing: { peerTimeoutMs: 60_000 } });
    const window = 2000;
    node.sendAll(Array.from({ length: window }, (_, i) => `history ${i} ${'x'.repeat(200)}`));
    // Two messages of a third sender Z, held by the node (relayed to it by some peer).
    const z = generateIdentity();
    const source = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the source peer');
    source.send(signedChat(z, { text: 'z1', seq: 1 }));
    source.send(signedChat(z, { text: 'z2', seq: 2 }));
    await waitFor(() => node.stats().historySize === window + 2, 'the node to hold z1 and z2');
    await delay(700); // z1 older than the gap repair's minAgeMs below

    const peer = await rawPeer(t, node.port, { answerPings: true, pack: 65_536 });
    await waitFor(() => node.peers().length === 2, 'the joining peer');
    // What a joining node sends at peer-up (it has nothing), then what its gap repair sends a moment
    // later, having had z2 from another peer: holes only (busy), none younger than its minAgeMs.
    const rx = peer.frames.length;
    const joining: SyncFrame = { type: 'sync', marks: [], rx };
    const repair: SyncFrame = {
      type: 'sync',
      marks: [{ from: z.id, seq: 0, have: [[2, 2]] }],
      minAgeMs: 500,
      busy: true,
      rx,
    };
    peer.sendPack([serializeFrame(joining), serializeFrame(repair)]);
    const chatsOf = (from: string): number[] =>
      peer.frames.filter((f): f is ChatFrame => f.type === 'chat' && f.from === from).map((f) => f.seq);
    // Before: the repair's backlog (z1) took the place of the rest of the first (256 of 2,000 sent).
    await waitFor(() => chatsOf(node.id).length === window, 'the whole history', 10_000);
    assert.equal(new Set(chatsOf(node.id)).size, window, 'each once');
    // z1 once; z2 not at all, the peer said it has it (unless it was on its way before the repair).
    const zs = chatsOf(z.id);
    assert.deepEqual(
      zs.filter((seq) => seq === 1),
      [1],
    );
    assert.ok(zs.filter((seq) => seq === 2).length <= 1, `z: ${zs.join(',')}`);
  });

  it('still asks back for an anti-entropy sync that waited for the rate with others after it', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ nick: 'n', limits: { peerSyncs: { perSecond: 2, burst: 1 } } });
    const peer = await rawPeer(t, node.port, { answerPings: true, pack: 65_536 });
    await waitFor(() => node.peers().length === 1 && peer.count('sync') === 1, 'the peer-up sync');
    const plain: SyncFrame = { type: 'sync', marks: [], rx: peer.frames.length };
    // The token's worth; then an anti-entropy sync (minAgeMs: answer with your own) and a gap
    // repair's, both over the rate. Before: the repair's took the other's place, no ask-back.
    peer.sendPack([
      serializeFrame(plain),
      serializeFrame({ ...plain, minAgeMs: 1000 }),
      serializeFrame({ ...plain, busy: true }),
    ]);
    await waitFor(() => peer.count('sync') === 2, 'the node to ask back (its own sync)', 3000);
  });

  it('keeps at most maxDials connection attempts in flight; the others wait their turn', async (t) => {
    const start = nodeFactory(t);
    const dead = await deadEnds(t, 8);
    const h = await start({
      nick: 'h',
      limits: { maxDials: 2 },
      peers: dead.addresses.map((a) => ({ host: HOST, port: Number(a.split(':')[1]) })),
    });
    let peakInFlight = 0;
    const watch = setInterval(() => (peakInFlight = Math.max(peakInFlight, h.stats().dialsInFlight)), 5);
    t.after(() => clearInterval(watch));
    // Each dead end holds a dial until the hello timeout (1.5 s in tests): turns come as they fail.
    await waitFor(() => dead.reached() >= 4, 'dials beyond the first two', 6000);
    assert.ok(peakInFlight <= 2, `${peakInFlight} dials in flight`);
    // Seen from the dead ends, a slot's next dial may open a moment before the last one's close
    // arrives; without the cap all 8 would be open at once.
    assert.ok(dead.peak() <= 4, `${dead.peak()} connections open at once`);
  });

  it('keeps at most maxLearnedAddresses learned addresses, however many peer lists arrive', async (t) => {
    const start = nodeFactory(t);
    const dead = await deadEnds(t, 4);
    const h = await start({ nick: 'h', limits: { maxLearnedAddresses: 10 } });
    const raw = await rawPeer(t, h.port, { answerPings: true });
    await waitFor(() => h.peers().length === 1, 'h to have the raw peer');
    // 3 lists of 60 entries: fake ids on closed loopback ports, and the dead ends.
    for (let list = 0; list < 3; list++) {
      const peers: PeerEntry[] = [];
      for (let i = 0; i < 60; i++) {
        const id = (list * 100 + i).toString(16).padStart(32, '0');
        const addr = i < dead.addresses.length ? dead.addresses[i]! : `127.0.0.1:${1 + list * 100 + i}`;
        peers.push({ id, addr });
      }
      raw.send({ type: 'peers', peers });
    }
    raw.send(signedChat(raw.identity, { text: 'barrier', seq: 1 }));
    await waitFor(() => h.stats().historySize === 1, 'the frames before the barrier to be handled');
    // The raw peer's own address (learned when it connected) plus at most 10 learned ones.
    assert.ok(h.stats().knownAddresses <= 10, `${h.stats().knownAddresses} addresses kept`);
    assert.ok(h.stats().dialsInFlight <= 16);
    assert.ok(
      h.peers().some((p) => p.id === raw.id),
      'the raw peer is still connected',
    );
  });
});

/** `n` entries of fake nodes at loopback ports nothing listens on (from 1 + `base`). */
function fakeEntries(n: number, base: number): PeerEntry[] {
  return Array.from({ length: n }, (_, i) => ({
    id: (base + i).toString(16).padStart(32, 'f'),
    addr: `${HOST}:${1 + base + i}`,
  }));
}

/** Raw peers, each connected to `port` and up at `node`. */
/**
 * The port of a node `h` dialled (a raw peer's list named it, so its address is proven) and that went
 * away since: nothing listens there until the test starts a node at it.
 */
async function dialledAndGone(
  t: TestContext,
  start: ReturnType<typeof nodeFactory>,
  h: P2PNode,
): Promise<number> {
  const a = await start({ nick: 'a' });
  const [teller] = await rawPeers(t, h, 1);
  teller!.send({ type: 'peers', peers: [{ id: a.id, addr: `${HOST}:${a.port}` }] });
  await waitFor(() => h.peers().some((p) => p.id === a.id), 'h to dial a');
  await a.close();
  await waitFor(() => !h.peers().some((p) => p.id === a.id), 'h to see a go');
  return a.port;
}

async function rawPeers(t: TestContext, node: P2PNode, n: number): Promise<RawPeer[]> {
  const raws: RawPeer[] = [];
  for (let i = 0; i < n; i++) raws.push(await rawPeer(t, node.port, { answerPings: true }));
  await waitFor(() => raws.every((r) => node.peers().some((p) => p.id === r.id)), 'the raw peers up');
  return raws;
}

/** Each raw peer sends its list, then a message; resolves when `node` holds all the messages. */
async function flood(node: P2PNode, raws: readonly RawPeer[], lists: readonly PeerEntry[][]): Promise<void> {
  const before = node.stats().historySize;
  raws.forEach((raw, i) => {
    raw.send({ type: 'peers', peers: lists[i]! });
    raw.send(signedChat(raw.identity, { text: 'barrier', seq: 1 }));
  });
  await waitFor(() => node.stats().historySize === before + raws.length, 'the lists to be handled');
}

describe('abuse limits: the learned address table', () => {
  // Dials of the fake addresses fail at once and never prove them; a learned address is not
  // forgotten for failing within the test; every learned address may be dialled.
  const table = (maxLearnedAddresses: number): NodeOptions => ({
    nick: 'h',
    limits: { maxLearnedAddresses },
    learnedDialAttempts: 100_000,
    targetPeers: 32,
  });

  it('keeps an address it proved (dialled, hello verified) through a flood of unproven ones from many peers', async (t) => {
    const start = nodeFactory(t);
    const h = await start(table(12));
    const port = await dialledAndGone(t, start, h);
    // 4 more peers (their own addresses kept too), each naming 20 unreachable nodes.
    const raws = await rawPeers(t, h, 4);
    await flood(
      h,
      raws,
      raws.map((_, i) => fakeEntries(20, 1000 + 100 * i)),
    );
    assert.ok(h.stats().knownAddresses <= 12, `${h.stats().knownAddresses} addresses kept`);
    // a's address is still dialled: a node back there is reached. Before: forgotten for the flood.
    const back = await start({ nick: 'a2', port });
    await waitFor(() => h.peers().some((p) => p.id === back.id), 'h to dial a again at its address', 5000);
  });

  it('lets one peer hold at most a quarter of the table: its flood does not push out what others named', async (t) => {
    const start = nodeFactory(t);
    const h = await start(table(8));
    const [first, flooder] = await rawPeers(t, h, 2);
    const port = await freePort();
    await flood(h, [first!], [[{ id: 'e'.repeat(32), addr: `${HOST}:${port}` }]]);
    await flood(h, [flooder!], [fakeEntries(60, 2000)]);
    // The two peers' own addresses, the one the first named, and 2 (a quarter of 8) of the flood's.
    assert.ok(h.stats().knownAddresses <= 5, `${h.stats().knownAddresses} addresses kept`);
    const accepted = await listenOn(t, port);
    await waitFor(() => accepted() > 0, 'h to dial the address the first peer named', 5000);
  });

  it("does not prove an address a peer list named when an inbound peer's hello advertises it", async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    // A long backoff: after its first (refused) dial, the address waits idle for the whole test.
    const h = await start({ ...table(12), log, timing: { backoff: { baseMs: 60_000, maxMs: 60_000 } } });
    const port = await freePort();
    const addr = `${HOST}:${port}`;
    const [teller] = await rawPeers(t, h, 1);
    // Named first by a peer (unproven: h's dial of it is refused)...
    await flood(h, [teller!], [[{ id: 'e'.repeat(32), addr }]]);
    await waitFor(() => h.stats().dialsInFlight === 0, 'the dial of it to fail');
    // ...then an inbound peer says hello giving it as its own address; then its link goes.
    const inbound = await rawPeer(t, h.port, { answerPings: true, listenPort: port });
    await waitFor(() => h.peers().some((p) => p.id === inbound.id), 'the inbound peer up');
    inbound.socket.destroy();
    await waitFor(() => !h.peers().some((p) => p.id === inbound.id), 'the inbound peer gone');
    // 4 peers' lists of unproven addresses fill the table: the oldest idle unproven one goes first.
    const raws = await rawPeers(t, h, 4);
    await flood(
      h,
      raws,
      raws.map((_, i) => fakeEntries(20, 3000 + 100 * i)),
    );
    // Before: the hello had made it proven, and no unproven address could take its place.
    assert.equal(log.count(`forgetting ${addr} to make room`), 1, log.lines.join('\n'));
  });

  it('keeps an address it dialled through many identities each advertising a fake address in its hello', async (t) => {
    const start = nodeFactory(t);
    const h = await start(table(8));
    const port = await dialledAndGone(t, start, h);
    // 16 identities, one after the other: each says hello with an address nothing listens at, is
    // taken as a peer, and goes.
    for (let i = 0; i < 16; i++) {
      const [liar] = await rawPeers(t, h, 1);
      liar!.socket.destroy();
      await waitFor(() => !h.peers().some((p) => p.id === liar!.id), 'the identity gone');
    }
    assert.ok(h.stats().knownAddresses <= 8, `${h.stats().knownAddresses} addresses kept`);
    // a's address is still dialled: a node back there is reached. Before: each identity's address
    // was proven by its hello, and the first one past the table's size pushed a's out.
    const back = await start({ nick: 'a2', port });
    await waitFor(() => h.peers().some((p) => p.id === back.id), 'h to dial a again at its address', 5000);
  });
});

describe('abuse limits: nothing lost', () => {
  it('fetches again, at the allowed pace, an honest backlog dropped over its sender rate', async (t) => {
    const start = nodeFactory(t);
    const h = await start({
      nick: 'h',
      limits: { senderMessages: { perSecond: 100, burst: 20 } },
      timing: { rateResyncDelayMs: 300 },
    });
    // maxPeers 1: s and b never link to each other, so all b hears of s comes through h.
    const s = await start({ nick: 's', peers: [loopback(h.port)], maxPeers: 1 });
    const b = await start({ nick: 'b', peers: [loopback(h.port)], maxPeers: 1 });
    const inboxB = record(b.messages$);
    await waitFor(() => h.peers().length === 2, 'the links');
    for (let i = 0; i < 200; i++) s.send(`paste ${i}`);
    await waitFor(() => h.stats().rateLimitedMessages > 0, 'h to drop some over the rate');
    await waitFor(() => h.stats().historySize === 200, 'h to hold all 200 in the end', 10_000);
    await waitFor(() => fromSender(inboxB, s.id).length === 200, 'b to deliver all 200', 10_000);
    assert.equal(new Set(fromSender(inboxB, s.id).map((m) => m.seq)).size, 200, 'each once');
  });

  it('asks again after each of many over-rate episodes without a listener piling up on the socket', async (t) => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));
    const start = nodeFactory(t);
    const node = await start({
      limits: { senderMessages: { perSecond: 1, burst: 1 } },
      timing: { rateResyncDelayMs: 20, peerTimeoutMs: 60_000 },
    });
    const peer = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the peer');
    // 15 episodes: two messages each, the second over the rate; the node asks again 20 ms later
    // (for as many as the rate lets in: `max` 1).
    const asked = (): number => peer.frames.filter((f) => f.type === 'sync' && f.max === 1).length;
    for (let round = 0; round < 15; round++) {
      burst(peer, 2, 2 * round + 1, `round ${round}`);
      await waitFor(() => asked() >= round + 1, `the request after episode ${round}`);
    }
    // Node warns at the 11th listener of one event on one emitter (a leak of one per episode did).
    assert.deepEqual(
      warnings.filter((w) => w.includes('MaxListenersExceeded')),
      [],
    );
  });
});
