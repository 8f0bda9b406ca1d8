import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import {
  MIN_FRAME_BYTES,
  type ChatMessage,
  type NodeEvent,
  type NodeTiming,
  type P2PNode,
  type PeerInfo,
} from '../../lib/node/node.js';
import { encodeFrame, FrameDecoder, pack, PACK_MARKER } from '../../lib/protocol/codec.js';
import {
  encodeChat,
  MAX_TEXT_LENGTH,
  PROTOCOL_VERSION,
  serializeFrame,
  type ChatFrame,
  type HelloFrame,
} from '../../lib/protocol/frames.js';
import {
  createHandshake,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  type SecureSession,
} from '../../lib/security/noise.js';
import { chatProblemChecker } from '../../lib/operators/verify.js';
import type { RelayView } from '../../lib/operators/relay.js';
import { MAX_HISTORY_MESSAGES, MAX_PAYLOAD_BYTES } from '../../lib/store/message-store.js';
import { networkTag } from '../../lib/security/network-key.js';
import { generateIdentity, type Identity } from '../../lib/security/identity.js';
import {
  closed,
  connectedTo,
  deadEnds,
  downs,
  establishedOn,
  FAST_TIMING,
  forwarder,
  freePort,
  HOST,
  lineLogger,
  listenOn,
  liveTimers,
  loopback,
  nextTurn,
  nodeFactory,
  peerIds,
  rawPeer,
  record,
  signedChat,
  tcpSockets,
  type RawPeer,
  type Recording,
  upkeepTicks,
  ups,
  waitFor,
} from '../helpers/nodes.js';

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** How many times `inbox` delivered the message with id `id`. */
const times = (inbox: Recording<ChatMessage>, id: string): number =>
  inbox.values.filter((m) => m.id === id).length;

/** A node (ann), its inbox, and a raw peer bob that is up once it said `hello`. */
async function bobSaysHello(
  t: TestContext,
  hello: Partial<HelloFrame>,
): Promise<{ node: P2PNode; inbox: Recording<ChatMessage>; bob: RawPeer }> {
  const node = await nodeFactory(t)({ nick: 'ann' });
  const inbox = record(node.messages$);
  const bob = await rawPeer(t, node.port, { answerPings: true, deferHello: true });
  bob.hello(hello);
  await waitFor(() => node.peers().length === 1, 'bob to come up');
  return { node, inbox, bob };
}

/** Waits for the message `id` to reach `inbox`, then gives the nicks `node` lists its peers under. */
async function nicksOnceArrived(
  node: P2PNode,
  inbox: Recording<ChatMessage>,
  id: string,
  what: string,
): Promise<string[]> {
  await waitFor(() => times(inbox, id) === 1, what);
  return node.peers().map((p) => p.nick);
}

/**
 * Sends a message from `sender` and waits until every other node's inbox has it. Messages that went
 * out before it along the same links have then arrived too, which makes it a barrier.
 */
async function sendAndAwait(
  sender: P2PNode,
  nodes: readonly P2PNode[],
  inboxes: readonly Recording<ChatMessage>[],
  text: string,
): Promise<ChatMessage> {
  const message = sender.send(text);
  await waitFor(
    () => nodes.every((node, i) => node === sender || times(inboxes[i]!, message.id) > 0),
    `"${text}" to reach every node`,
  );
  return message;
}

/** Two fresh identities, the one with the smaller id first. */
function orderedIdentities(): [Identity, Identity] {
  const [x, y] = [generateIdentity(), generateIdentity()];
  return x.id < y.id ? [x, y] : [y, x];
}

/**
 * Messages go both ways between `a` and `b` (labelled `what`), and neither saw the other come and
 * go: `peerUps` peer-ups each since their events were recorded (1: recorded before they met), no
 * peer-down.
 */
async function assertSteadyLink(
  [a, b]: readonly [P2PNode, P2PNode],
  [eventsA, eventsB]: readonly [Recording<NodeEvent>, Recording<NodeEvent>],
  what: string,
  peerUps = 1,
): Promise<void> {
  const inboxA = record(a.messages$);
  const inboxB = record(b.messages$);
  await sendAndAwait(a, [a, b], [inboxA, inboxB], `there (${what})`);
  await sendAndAwait(b, [a, b], [inboxA, inboxB], `back (${what})`);
  assert.equal(ups(eventsA).length, peerUps, `${what}: peer-ups on a`);
  assert.equal(ups(eventsB).length, peerUps, `${what}: peer-ups on b`);
  assert.deepEqual(downs(eventsA), [], `${what}: no peer-down on a`);
  assert.deepEqual(downs(eventsB), [], `${what}: no peer-down on b`);
}

/** A node with one honest peer connected to it: what a rogue peer of the node must not harm. */
async function nodeWithFriend(t: TestContext): Promise<{ node: P2PNode; friend: P2PNode }> {
  const start = nodeFactory(t);
  const node = await start();
  const friend = await start({ peers: [loopback(node.port)] });
  await waitFor(() => connectedTo(node, [friend]), 'the friend to connect');
  return { node, friend };
}

/** The friend's messages still reach the node, and the friend is the node's only peer. */
async function assertUnharmed(node: P2PNode, friend: P2PNode): Promise<void> {
  const inboxes = [record(node.messages$), record(friend.messages$)];
  await sendAndAwait(friend, [node, friend], inboxes, 'unharmed');
  assert.deepEqual(peerIds(node), [friend.id]);
}

/** Sockets on this host in SYN_SENT towards 127.0.0.1:`port`. */
const synSentTo = (port: number): number =>
  tcpSockets().filter((s) => s.state === '02' && s.remoteAddress === '0100007F' && s.remotePort === port)
    .length;

/** True when the nodes form a line, each connected to its neighbours only. */
const isLine = (nodes: readonly P2PNode[]): boolean =>
  nodes.every((node, i) =>
    connectedTo(
      node,
      [nodes[i - 1], nodes[i + 1]].filter((n) => n !== undefined),
    ),
  );

/** Starts five nodes, each given only the previous one, with targetPeers 1 so peer exchange adds no links. */
async function line(start: ReturnType<typeof nodeFactory>): Promise<P2PNode[]> {
  const nodes: P2PNode[] = [];
  for (const i of range(5)) {
    const previous = nodes[i - 1];
    const node = await start({
      nick: `n${i}`,
      targetPeers: 1,
      peers: previous === undefined ? [] : [loopback(previous.port)],
    });
    if (previous !== undefined) {
      const neighbours = [nodes[i - 2], node].filter((n) => n !== undefined);
      await waitFor(() => connectedTo(previous, neighbours), `link ${i}`);
    }
    nodes.push(node);
  }
  await waitFor(() => isLine(nodes), 'a line of five');
  return nodes;
}

describe('createNode', () => {
  it('exchanges messages both ways, each with the sender id, nick, time and text', async (t) => {
    const start = nodeFactory(t);
    const ann = await start({ nick: 'ann' });
    const bob = await start({ nick: 'bob', peers: [loopback(ann.port)] });
    const annInbox = record(ann.messages$);
    const bobInbox = record(bob.messages$);
    await waitFor(() => connectedTo(ann, [bob]) && connectedTo(bob, [ann]), 'ann and bob to connect');

    const before = Date.now();
    const hello = ann.send('hello bob');
    const after = Date.now();
    assert.match(hello.id, /^[0-9a-zA-Z_-]{1,64}$/);
    assert.equal(hello.from, ann.id);
    assert.equal(hello.nick, 'ann');
    assert.equal(hello.text, 'hello bob');
    assert.ok(hello.ts >= before && hello.ts <= after, 'ts is the time of sending');
    await waitFor(() => bobInbox.values.length === 1, 'bob to get a message');
    assert.deepEqual(bobInbox.values, [hello]);

    bob.setNick('robert');
    const reply = bob.send('hi ann, ünïcödé ✓');
    await waitFor(() => annInbox.values.length === 1, 'ann to get a message');
    assert.deepEqual(annInbox.values, [reply]);
    assert.equal(reply.from, bob.id);
    assert.equal(reply.nick, 'robert');
    assert.notEqual(reply.id, hello.id);

    assert.ok(
      annInbox.values.every((m) => m.from !== ann.id),
      "ann's own message is not in her inbox",
    );
    assert.ok(
      bobInbox.values.every((m) => m.from !== bob.id),
      "bob's own message is not in his inbox",
    );
  });

  it('lists a connected peer with its id, nick, listen address and direction', async (t) => {
    const start = nodeFactory(t);
    const ann = await start({ nick: 'ann' });
    const bob = await start({ nick: 'bob', peers: [loopback(ann.port)] });
    await waitFor(() => connectedTo(ann, [bob]) && connectedTo(bob, [ann]), 'ann and bob to connect');
    assert.deepEqual(ann.peers(), [
      { id: bob.id, nick: 'bob', address: `127.0.0.1:${bob.port}`, direction: 'in' },
    ] satisfies PeerInfo[]);
    assert.deepEqual(bob.peers(), [
      { id: ann.id, nick: 'ann', address: `127.0.0.1:${ann.port}`, direction: 'out' },
    ] satisfies PeerInfo[]);
  });

  it("lists a peer under the nick of its newest message after it renamed itself, not an older message's", async (t) => {
    const start = nodeFactory(t);
    const bob = await start({ nick: 'bob' });
    const early = bob.send('said as bob before ann came');
    bob.setNick('robert');
    const ann = await start({ nick: 'ann', peers: [loopback(bob.port)] });
    const annInbox = record(ann.messages$);
    const annPeers = record(ann.peers$);
    await waitFor(() => times(annInbox, early.id) === 1, "bob's history to reach ann");
    // The hello said robert; the history's older message as bob does not turn it back.
    assert.deepEqual(
      ann.peers().map((p) => p.nick),
      ['robert'],
    );

    bob.setNick('bobby');
    const renamed = bob.send('now as bobby');
    await waitFor(() => times(annInbox, renamed.id) === 1, 'the message as bobby');
    assert.deepEqual(
      ann.peers().map((p) => [p.id, p.nick]),
      [[bob.id, 'bobby']],
    );
    assert.deepEqual(
      annPeers.values.at(-1)?.map((p) => p.nick),
      ['bobby'],
      'peers$ says so too',
    );
  });

  // A peer's messages carry its clock, not ours: which of its nicks is newest is told by its
  // sequence numbers (its hello says its last one), so a clock behind or ahead of ours is no matter.
  it("takes a peer's rename from its next message although the peer's clock is a minute behind", async (t) => {
    const { node, inbox, bob } = await bobSaysHello(t, { nick: 'bob', seq: 0 });
    const renamed = signedChat(bob.identity, { text: 'hi', seq: 1, nick: 'robert', ts: Date.now() - 60_000 });
    bob.send(renamed);
    assert.deepEqual(await nicksOnceArrived(node, inbox, renamed.id, 'the message as robert'), ['robert']);
  });

  it("keeps a peer's newer nick over its older messages although the peer's clock is a minute ahead", async (t) => {
    const node = await nodeFactory(t)({ nick: 'ann' });
    const inbox = record(node.messages$);
    const bob = await rawPeer(t, node.port, { answerPings: true, deferHello: true });
    const ahead = (): number => Date.now() + 60_000;
    // Its message 2 went out as bob, then it renamed itself and connected: a resync brings that one now.
    bob.hello({ nick: 'robert', seq: 2 });
    await waitFor(() => node.peers().length === 1, 'bob to come up');
    const old = signedChat(bob.identity, { text: 'as bob', seq: 2, nick: 'bob', ts: ahead() });
    bob.send(old);
    assert.deepEqual(
      await nicksOnceArrived(node, inbox, old.id, 'the old message'),
      ['robert'],
      "the hello's nick stays",
    );

    const renamed = signedChat(bob.identity, { text: 'as bobby', seq: 3, nick: 'bobby', ts: ahead() });
    const older = signedChat(bob.identity, { text: 'as bob before', seq: 1, nick: 'bob', ts: ahead() });
    bob.send(renamed);
    bob.send(older);
    assert.deepEqual(
      await nicksOnceArrived(node, inbox, older.id, 'the messages as bobby and bob'),
      ['bobby'],
      'an older message after a newer one does not turn the nick back, whatever its ts',
    );
  });

  it('orders the nicks of a peer of an older build (a hello without seq) by its clock against ours, as that build did', async (t) => {
    const { node, inbox, bob } = await bobSaysHello(t, { nick: 'robert' }); // no seq, no ts: renamed since its older messages
    // What a resync brings right after the hello: its history, under its old nick.
    const old = signedChat(bob.identity, {
      text: 'an hour ago',
      seq: 7,
      nick: 'bob',
      ts: Date.now() - 3_600_000,
    });
    bob.send(old);
    assert.deepEqual(
      await nicksOnceArrived(node, inbox, old.id, 'the old message'),
      ['robert'],
      'history does not turn its nick back',
    );
    const renamed = signedChat(bob.identity, { text: 'now', seq: 8, nick: 'bobby', ts: Date.now() + 1 });
    bob.send(renamed);
    assert.deepEqual(
      await nicksOnceArrived(node, inbox, renamed.id, 'the new message'),
      ['bobby'],
      'a message after its hello renames it',
    );
  });

  it('keeps its relay targets when a peer renames itself: a nick is no part of who is linked to whom', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const raw = await rawPeer(t, node.port, { answerPings: true });
    const lists = record(node.peers$);
    await waitFor(() => node.peers().length === 1, 'the raw peer to be up');
    raw.send(signedChat(raw.identity, { text: 'as raw', seq: 1 }));
    await waitFor(() => node.stats().historySize === 1, 'the first message');
    // What the relay's last answer is kept under (lib/operators/relay.ts, lastRelayTargets): the
    // view's version and the peer id list. A new value of either has every message's targets
    // walked out again; a peer renaming itself with each message would have them walked every time.
    const internals = node as unknown as {
      relayView: RelayView;
      peerIds: { readonly value: readonly string[] };
    };
    const version = internals.relayView.version!();
    const ids = internals.peerIds.value;
    raw.send(signedChat(raw.identity, { text: 'as renamed', seq: 2, nick: 'renamed' }));
    await waitFor(() => node.peers()[0]?.nick === 'renamed', 'the rename');
    assert.equal(lists.values.at(-1)?.[0]?.nick, 'renamed', 'peers$ says so');
    assert.equal(internals.relayView.version!(), version, 'the relay view is the same');
    assert.equal(internals.peerIds.value, ids, 'the peer id list is the same');
  });

  it('knows a peer at its advertised address in canonical spelling, however the peer wrote it', async (t) => {
    const start = nodeFactory(t);
    const ann = await start({ nick: 'ann' });
    const port = await freePort();
    const bob = await start({
      nick: 'bob',
      advertise: { host: 'LocalHost', port },
      peers: [loopback(ann.port)],
    });
    await waitFor(() => connectedTo(ann, [bob]), 'bob to connect');
    assert.equal(ann.peers()[0]?.address, `localhost:${port}`);
  });

  it('ends simultaneous dials with exactly one connection on both sides, never zero', async (t) => {
    const start = nodeFactory(t);
    await Promise.all(
      range(10).map(async (i) => {
        // Even pairs: the first node has the smaller id; odd pairs: the second one does.
        const [smaller, larger] = orderedIdentities();
        const [identityA, identityB] = i % 2 === 0 ? [smaller, larger] : [larger, smaller];
        const log = lineLogger();
        const a = await start({ identity: identityA, log });
        const b = await start({ identity: identityB, log });
        assert.equal(a.id < b.id, i % 2 === 0, `pair ${i}: the ids are ordered as planned`);
        const eventsA = record(a.events$);
        const eventsB = record(b.events$);
        const listsA = record(a.peers$);
        const listsB = record(b.peers$);
        // Vary who dials first and how far apart; both dial before either has seen a hello.
        switch (i % 4) {
          case 0:
            a.connect(loopback(b.port));
            b.connect(loopback(a.port));
            break;
          case 1:
            b.connect(loopback(a.port));
            a.connect(loopback(b.port));
            break;
          case 2:
            a.connect(loopback(b.port));
            await nextTurn();
            b.connect(loopback(a.port));
            break;
          default:
            b.connect(loopback(a.port));
            await nextTurn();
            a.connect(loopback(b.port));
        }
        await waitFor(
          () => connectedTo(a, [b]) && connectedTo(b, [a]) && establishedOn([a.port, b.port]) === 1,
          `pair ${i} to settle on one connection`,
          // Ten pairs at once: on a loaded machine (load 6-9 on 2 cores) 5 s was seen to be too short.
          15_000,
        );
        // Both sides kept the same connection: the one dialled by the node with the smaller id.
        const [lower, higher] = a.id < b.id ? [a, b] : [b, a];
        assert.equal(lower.peers()[0]?.direction, 'out', `pair ${i}`);
        assert.equal(higher.peers()[0]?.direction, 'in', `pair ${i}`);

        // The link works both ways after the duplicate is gone.
        await assertSteadyLink([a, b], [eventsA, eventsB], `pair ${i}`);
        for (const lists of [listsA, listsB]) {
          const first = lists.values.findIndex((l) => l.length > 0);
          assert.ok(
            lists.values.slice(first).every((l) => l.length === 1),
            `pair ${i}: never zero nor two peers once connected`,
          );
        }
        assert.equal(establishedOn([a.port, b.port]), 1, `pair ${i}: one TCP connection`);
        assert.ok(log.count('duplicate connection') >= 1, `pair ${i}: the two dials did cross`);
      }),
    );
  });

  it('keeps the same one of two connections on both sides when one node dials a peer at two addresses', async (t) => {
    const start = nodeFactory(t);
    // Before keeping the older connection a node pings it and waits a ping interval for the answer,
    // which comes through the proxy's delay: FAST_TIMING's 250 ms left too little of it for twelve
    // nodes on a loaded machine (the answer came late, the live connection was dropped as dead and
    // the peer went down and up: 1 run in 6 under load). A second is still a fifth of the default.
    const timing = { pingIntervalMs: 1000, peerTimeoutMs: 6000 };
    await Promise.all(
      range(6).map(async (i) => {
        const log = lineLogger();
        const a = await start({ log, timing });
        const b = await start({ log, timing });
        // Both connections are dialled by a: the rule "keep the one the smaller id dialled" ties.
        // The proxy delays what b sends back, so the two hellos cross: b gets a's hello through the
        // proxy first (at ~1 delay), a gets b's hello on the direct link first (before ~2 delays).
        const { port: proxy } = await forwarder(t, b.port, 100);
        const eventsA = record(a.events$);
        const eventsB = record(b.events$);
        a.connect(loopback(proxy));
        await new Promise((resolve) => setTimeout(resolve, 120 + 20 * (i % 3)));
        a.connect(loopback(b.port));
        const links = (): number => establishedOn([b.port]) + establishedOn([proxy]);
        // One link left: straight to b (1 socket at b's port), or through the proxy (1 at each).
        await waitFor(
          () =>
            connectedTo(a, [b]) &&
            connectedTo(b, [a]) &&
            log.count('duplicate connection') >= 1 &&
            establishedOn([b.port]) === 1 &&
            links() <= 2,
          `pair ${i} to settle on one connection`,
          5000,
        );
        await assertSteadyLink([a, b], [eventsA, eventsB], `pair ${i}`);
      }),
    );
  });

  it('takes back at once a peer that restarted while its old connection hangs, not after a timeout', async (t) => {
    const start = nodeFactory(t);
    const [smaller, larger] = orderedIdentities();
    const log = lineLogger();
    const a = await start({ identity: smaller, log });
    const b = await start({ identity: larger });
    // a dials b: of two connections between them, the one a dialled is the one both sides prefer.
    const proxy = await forwarder(t, b.port);
    a.connect(loopback(proxy.port));
    await waitFor(() => connectedTo(a, [b]) && connectedTo(b, [a]), 'a and b to connect');

    // b's host vanishes: a hears nothing more on that link, not even a close. b comes back with
    // the same identity (and nothing sent under it yet, so no history to carry over).
    proxy.freeze();
    await b.close();
    const b2 = await start({ identity: larger, peers: [loopback(a.port)] });
    const events2 = record(b2.events$);
    const inboxA = record(a.messages$);
    const inbox2 = record(b2.messages$);
    await waitFor(
      () => a.peers()[0]?.direction === 'in' && connectedTo(b2, [a]),
      'a to take the new connection',
      // Less than the peer timeout, after which the old link is dropped anyway.
      FAST_TIMING.peerTimeoutMs! - 500,
    );
    await sendAndAwait(a, [a, b2], [inboxA, inbox2], 'welcome back');
    await sendAndAwait(b2, [a, b2], [inboxA, inbox2], 'thanks');
    assert.equal(ups(events2).length, 1, 'b2 was never sent away');
    assert.deepEqual(downs(events2), []);
    assert.equal(log.count('no answer to a ping since the peer connected again'), 1, log.lines.join('\n'));
  });

  it('closes the duplicate as soon as the connection it keeps answers its ping, not a ping interval later', async (t) => {
    const start = nodeFactory(t);
    const [smaller, larger] = orderedIdentities();
    const timing = { pingIntervalMs: 20_000, peerTimeoutMs: 60_000 };
    const log = lineLogger();
    const a = await start({ identity: smaller, timing, log });
    const b = await start({ identity: larger, timing, log });
    a.connect(loopback(b.port));
    await waitFor(() => connectedTo(a, [b]) && connectedTo(b, [a]), 'a and b to connect');
    // Through a forwarder: b knows a's own address as a's already, and would not dial it.
    const proxy = await forwarder(t, a.port);
    b.connect(loopback(proxy.port)); // the one neither side prefers: both ping the first, then close this
    await waitFor(() => log.count('keeping the existing one') === 2, 'both sides to keep the first', 2_000);
    await waitFor(() => establishedOn([a.port]) === 0, 'the duplicate to close', 2_000);
    assert.equal(establishedOn([b.port]), 1, 'the first connection stays');
    assert.deepEqual(peerIds(a), [b.id]);
  });

  it('moves to a new connection on both sides when the one they keep stops carrying one way', async (t) => {
    const start = nodeFactory(t);
    await Promise.all(
      range(4).map(async (i) => {
        const [smaller, larger] = orderedIdentities();
        const a = await start({ identity: smaller });
        const b = await start({ identity: larger });
        // c1, dialled by the smaller id: the one both sides prefer.
        const c1 = await forwarder(t, b.port);
        a.connect(loopback(c1.port));
        await waitFor(() => connectedTo(a, [b]) && connectedTo(b, [a]), `pair ${i} to connect`);
        const eventsA = record(a.events$);
        const eventsB = record(b.events$);
        // Nothing of b reaches a on c1 any more; a's frames still reach b. Then b dials a again (c2).
        c1.freeze('back');
        b.connect(loopback((await forwarder(t, a.port)).port));
        // Each side pings c1 and hears no answer (b's ping or a's pong is lost): both move to c2.
        // Were a's own pings on c1 taken for an answer, b would keep c1 and send c2 away.
        await waitFor(
          () => a.peers()[0]?.direction === 'in' && b.peers()[0]?.direction === 'out',
          `pair ${i}: both on c2`,
          3 * FAST_TIMING.pingIntervalMs!,
        );
        // Recorded after both were up: no peer-up since, and no peer-down.
        await assertSteadyLink([a, b], [eventsA, eventsB], `pair ${i}, over c2`, 0);
      }),
    );
  });

  it('drops a link to its own port and does not dial it again', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({ log });
    const events = record(node.events$);
    // A peer that answers pings is the test's clock: each ping is one upkeep tick of the node.
    const witness = await rawPeer(t, node.port, { answerPings: true });

    node.connect(loopback(node.port));
    await waitFor(() => log.count('is this node; not dialling it again') === 1, 'the node to notice itself');
    await waitFor(() => establishedOn([node.port]) === 1, 'the link to itself to close (the witness stays)');
    await upkeepTicks(witness, 5);
    node.connect(`127.0.0.1:${node.port}`); // asked again: refused without a dial
    await upkeepTicks(witness, 2);

    assert.equal(log.count('connected to'), 1, 'dialled itself once');
    assert.deepEqual(peerIds(node), [witness.id]);
    assert.deepEqual(
      ups(events).map((e) => e.peer.id),
      [witness.id],
    );
    assert.deepEqual(downs(events), []);
  });

  it(
    'close() ends a dial still waiting for its SYN to be answered, at once rather than at its connect timeout',
    { timeout: 20_000 },
    async (t) => {
      // A listener whose process is stopped: once its accept queue (backlog 1) is full, the kernel
      // answers no SYN, and a dial to it waits in SYN_SENT.
      const child = spawn(
        process.execPath,
        [
          '-e',
          "require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, function () { console.log(this.address().port) })",
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      t.after(() => void child.kill('SIGKILL'));
      const [line] = (await once(child.stdout, 'data')) as [Buffer];
      const port = Number(line.toString().trim());
      process.kill(child.pid!, 'SIGSTOP');
      const fillers = range(4).map(() => connect({ host: HOST, port }).on('error', () => {}));
      t.after(() => fillers.forEach((socket) => socket.destroy()));
      await waitFor(() => synSentTo(port) >= 1, 'the accept queue to fill');
      const waiting = synSentTo(port);

      const start = nodeFactory(t);
      const node = await start({ timing: { connectTimeoutMs: 60_000 } });
      node.connect(loopback(port));
      await waitFor(() => synSentTo(port) === waiting + 1, "the node's dial to wait for an answer");
      await node.close();
      assert.equal(synSentTo(port), waiting, 'the dial is gone when close() resolves');
    },
  );

  it('learns again, after relearnMs, an address it gave up on that peers still name', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({
      log,
      learnedDialAttempts: 1,
      timing: { helloTimeoutMs: 200, relearnMs: 1_500 },
    });
    // A node that accepts and never answers the handshake: each dial of it is one connection there.
    const silent = await deadEnds(t);
    const [addr] = silent.addresses as [string];
    const named = { type: 'peers', peers: [{ id: generateIdentity().id, addr }] } as const;
    const teller = await rawPeer(t, node.port, { answerPings: true });

    teller.send(named);
    const learnedAt = Date.now();
    await waitFor(() => log.count(`forgetting ${addr}`) === 1, 'the node to give up on it');
    teller.send(named); // named again at once: still known as given up
    await upkeepTicks(teller, 2);
    assert.equal(silent.accepted(), 1, 'not dialled again within relearnMs');

    await waitFor(() => Date.now() - learnedAt > 1_600, 'relearnMs to pass', 3_000);
    teller.send(named);
    await waitFor(() => silent.accepted() === 2, 'the node to dial it again');
  });

  it('does not dial a connected peer again because a peer list names its address under other ids', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const honest = await start();
    const node = await start({ log, peers: [loopback(honest.port)] });
    await waitFor(() => connectedTo(node, [honest]), 'the honest peer to connect');
    const liar = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 2, 'the liar to be up');
    const dials = (): number => log.count(`connected to ${HOST}:${honest.port}`);
    assert.equal(dials(), 1);
    // Each list names the honest peer's address under a fresh id: a node it would take for another.
    for (let i = 0; i < 5; i++) {
      liar.send({ type: 'peers', peers: [{ id: generateIdentity().id, addr: `${HOST}:${honest.port}` }] });
      await upkeepTicks(liar, 1, 3000);
    }
    assert.equal(dials(), 1, 'the honest peer, connected all along, was dialled again');
    assert.ok(peerIds(node).includes(honest.id));
  });

  it('dials an address the user gave again when it comes back, whatever node a peer list says is there', async (t) => {
    const start = nodeFactory(t);
    const given = await start();
    const port = given.port;
    const node = await start({ peers: [loopback(port)] });
    await waitFor(() => connectedTo(node, [given]), 'the given peer to connect');
    const liar = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 2, 'the liar to be up');
    await given.close();
    await waitFor(() => !peerIds(node).includes(given.id), 'the given peer to go');
    // The liar names the address under a second identity of its own, then connects as that one:
    // were the list believed, the address would count as connected as long as that one stays.
    const accomplice = generateIdentity();
    liar.send({ type: 'peers', peers: [{ id: accomplice.id, addr: `${HOST}:${port}` }] });
    await rawPeer(t, node.port, { answerPings: true, identity: accomplice });
    await waitFor(() => peerIds(node).includes(accomplice.id), 'the second identity to be up');
    const back = await start({ port });
    await waitFor(() => peerIds(node).includes(back.id), 'the node to dial the address again', 5000);
  });

  it('dials an address the user gives although an inbound peer named it as its own in its hello', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const given = await start(); // not connected to node yet
    // The liar's hello says it listens at the given node's address: node knows the address as its.
    const liar = await rawPeer(t, node.port, { answerPings: true, deferHello: true });
    liar.hello({ port: given.port });
    await waitFor(() => peerIds(node).includes(liar.id), 'the liar to be up');
    assert.equal(node.connect(loopback(given.port)), 'dialling', 'only a dial tells who is there');
    await waitFor(() => peerIds(node).includes(given.id), 'the node to reach the given address', 5000);
  });

  it('does not dial a target again while its first connection is still in the handshake', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    // A listener that accepts and never answers the handshake: every dial of it is one connection there.
    const silent = await deadEnds(t);
    const [addr] = silent.addresses as [string];
    // A peer that answers pings is the test's clock: each ping is one upkeep tick of the node.
    const witness = await rawPeer(t, node.port, { answerPings: true });

    node.connect(addr);
    await waitFor(() => silent.accepted() >= 1, 'the dial');
    await upkeepTicks(witness, 3);
    // A redial after the hello timeout closed the first connection is fine; two at once are not.
    assert.equal(silent.peak(), 1, `${silent.accepted()} connections, ${silent.peak()} open at once`);
  });

  it('connect() to an address being dialled starts no second dial, and says so', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({ log });
    const silent = await deadEnds(t); // the dial stays in its handshake until the hello timeout
    const [addr] = silent.addresses as [string];
    assert.equal(node.connect(addr), 'dialling');
    await waitFor(() => silent.accepted() >= 1, 'the dial');
    assert.equal(node.connect(addr), 'already-dialling');
    assert.equal(log.count(`already dialling ${addr}`), 1, log.lines.join('\n'));
    assert.equal(node.stats().dialsInFlight, 1);
    assert.equal(silent.peak(), 1, `${silent.accepted()} connections, ${silent.peak()} open at once`);
  });

  it('relays a message from one end of a line of five to the other, exactly once at every node', async (t) => {
    const start = nodeFactory(t);
    const nodes = await line(start);
    const inboxes = nodes.map((node) => record(node.messages$));
    const first = nodes[0]!;
    const last = nodes[4]!;

    const message = await sendAndAwait(first, nodes, inboxes, 'end to end');
    await sendAndAwait(first, nodes, inboxes, 'barrier from the first');
    await sendAndAwait(last, nodes, inboxes, 'barrier from the last');

    assert.deepEqual(
      inboxes.map((inbox) => times(inbox, message.id)),
      [0, 1, 1, 1, 1],
    );
    assert.deepEqual(inboxes[4]!.values[0], message, 'delivered unchanged');
    assert.ok(isLine(nodes), 'still a line');
  });

  it('relays several messages from the middle of a line to both ends, once each and in order', async (t) => {
    const start = nodeFactory(t);
    const nodes = await line(start);
    const inboxes = nodes.map((node) => record(node.messages$));
    const middle = nodes[2]!;

    const sent = range(5).map((k) => middle.send(`from the middle #${k}`));
    await waitFor(
      () => inboxes.every((inbox, i) => i === 2 || sent.every((m) => times(inbox, m.id) > 0)),
      'every message everywhere',
    );
    await sendAndAwait(nodes[0]!, nodes, inboxes, 'barrier from the first');
    await sendAndAwait(nodes[4]!, nodes, inboxes, 'barrier from the last');

    for (const [i, inbox] of inboxes.entries()) {
      const fromMiddle = inbox.values.filter((m) => m.from === middle.id).map((m) => m.text);
      assert.deepEqual(fromMiddle, i === 2 ? [] : sent.map((m) => m.text), `node ${i}`);
    }
    assert.ok(isLine(nodes), 'still a line');
  });

  it('discovers the other nodes through peer exchange when given only one', async (t) => {
    const start = nodeFactory(t);
    const hub = await start({ nick: 'hub' });
    const b = await start({ nick: 'b', peers: [loopback(hub.port)] });
    const c = await start({ nick: 'c', peers: [loopback(hub.port)] });
    await waitFor(() => connectedTo(b, [hub, c]) && connectedTo(c, [hub, b]), 'b and c to find each other');

    const newcomer = await start({ nick: 'new', peers: [loopback(hub.port)] });
    const lists = record(newcomer.peers$);
    const nodes = [hub, b, c, newcomer];
    await waitFor(
      () =>
        nodes.every((node) =>
          connectedTo(
            node,
            nodes.filter((other) => other !== node),
          ),
        ),
      'a full mesh of four',
    );
    const latest = lists.values.at(-1) ?? [];
    assert.deepEqual(latest.map((p) => p.id).sort(), [hub.id, b.id, c.id].sort());
    assert.deepEqual(
      latest
        .filter((p) => p.id !== hub.id)
        .map((p) => p.address)
        .sort(),
      [`127.0.0.1:${b.port}`, `127.0.0.1:${c.port}`].sort(),
    );

    // In a mesh each node hears a message from several neighbours, and delivers it once.
    const inboxes = nodes.map((node) => record(node.messages$));
    const message = await sendAndAwait(newcomer, nodes, inboxes, 'hello everyone');
    await sendAndAwait(hub, nodes, inboxes, 'barrier');
    assert.deepEqual(
      inboxes.map((inbox) => times(inbox, message.id)),
      [1, 1, 1, 0],
    );
  });

  it('reports peer-down naming the shutdown when a node closes, and the others keep chatting', async (t) => {
    const start = nodeFactory(t);
    const a = await start({ nick: 'a' });
    const b = await start({ nick: 'b', peers: [loopback(a.port)] });
    const c = await start({ nick: 'c', peers: [loopback(a.port)] });
    await waitFor(
      () => connectedTo(a, [b, c]) && connectedTo(b, [a, c]) && connectedTo(c, [a, b]),
      'a triangle',
    );
    const eventsA = record(a.events$);
    const eventsB = record(b.events$);

    await c.close();
    await waitFor(() => downs(eventsA).length === 1 && downs(eventsB).length === 1, 'both to lose c');
    for (const events of [eventsA, eventsB]) {
      const [down] = downs(events);
      assert.equal(down?.peer.id, c.id);
      assert.equal(down?.peer.nick, 'c');
      assert.match(down?.reason ?? '', /shut ?down/i);
    }
    assert.deepEqual(peerIds(a), [b.id]);
    assert.deepEqual(peerIds(b), [a.id]);

    const inboxes = [record(a.messages$), record(b.messages$)];
    const fromA = await sendAndAwait(a, [a, b], inboxes, 'still here?');
    const fromB = await sendAndAwait(b, [a, b], inboxes, 'yes');
    assert.equal(times(inboxes[1]!, fromA.id), 1);
    assert.equal(times(inboxes[0]!, fromB.id), 1);
  });

  it('retries a peer that is not up yet, and connects once it starts', async (t) => {
    const start = nodeFactory(t);
    const port = await freePort();
    const log = lineLogger();
    const early = await start({ log, peers: [loopback(port)] });
    const failures = (): number[] => log.times(`cannot reach 127.0.0.1:${port}`);
    await waitFor(() => failures().length >= 3, 'three failed dials');
    const [first, , third] = failures();
    // Retries 1 and 2 wait at least half of 40 and 80 ms; at the base delay they would take 20-40 ms.
    assert.ok(third! - first! >= 55, `the delay between dials grows (${third! - first!} ms for two)`);
    assert.deepEqual(early.peers(), []);

    const late = await start({ port });
    await waitFor(
      () => connectedTo(early, [late]) && connectedTo(late, [early]),
      'the late node to be found',
    );
    assert.equal(early.peers()[0]?.direction, 'out');
  });

  it('drops a peer that sends a hello and then nothing, after peerTimeoutMs', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const events = record(node.events$);
    const silent = await rawPeer(t, node.port, { answerPings: false });
    await waitFor(() => ups(events).length === 1, 'the silent peer to be up');
    assert.deepEqual(peerIds(node), [silent.id]);

    await waitFor(() => downs(events).length === 1, 'the silent peer to be dropped');
    await silent.closed;
    const [upAt, downAt] = events.at;
    const [down] = downs(events);
    assert.equal(down?.peer.id, silent.id);
    assert.match(down?.reason ?? '', /ERR_PEER_TIMEOUT/);
    assert.ok(downAt! - upAt! >= FAST_TIMING.peerTimeoutMs! - 5, 'not dropped before its time was up');
    assert.ok(silent.count('ping') >= 1, 'it was pinged first');
    assert.deepEqual(node.peers(), []);
  });

  it('keeps a quiet peer that answers its pings', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const events = record(node.events$);
    const quiet = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => ups(events).length === 1, 'the quiet peer to be up');
    // Eight ping intervals outlast peerTimeoutMs: long enough to be dropped were pongs not counted.
    await waitFor(() => quiet.count('ping') >= 8, 'eight pings', 5000);
    assert.deepEqual(downs(events), []);
    assert.deepEqual(peerIds(node), [quiet.id]);
  });

  it('pings no peer it keeps hearing from but sends it a pong unasked, and pings it once it goes quiet', async (t) => {
    const start = nodeFactory(t);
    // Longer than FAST_TIMING's, so that a stall of this test's own event loop does not look quiet.
    const timing = { pingIntervalMs: 1000, peerTimeoutMs: 4000 };
    const node = await start({ timing });
    const events = record(node.events$);
    // It sends and the node has nothing to send back: traffic one way only, as to a slow reader of a
    // bulk transfer. The node must not wait for pongs to pings that queue behind that transfer.
    const chatty = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => ups(events).length === 1, 'the chatty peer to be up');
    // A frame every 50 ms, well under half a ping interval, for four intervals.
    let n = 0;
    const chatter = setInterval(() => chatty.send({ type: 'pong', n: n++ }), 50);
    t.after(() => clearInterval(chatter));
    await new Promise((resolve) => setTimeout(resolve, 4 * timing.pingIntervalMs));
    clearInterval(chatter);
    // One ping at most: a stall of this process over half an interval looks like quiet (before this
    // rule a ping went every interval).
    assert.ok(chatty.count('ping') <= 1, `${chatty.count('ping')} pings to a peer it kept hearing from`);
    assert.ok(chatty.count('pong') >= 2, 'it hears from the node all the same: a pong unasked each tick');
    const pings = chatty.count('ping');
    await waitFor(() => chatty.count('ping') >= pings + 2, 'pings once it is quiet', 5000);
    assert.deepEqual(downs(events), []);
    assert.deepEqual(peerIds(node), [chatty.id]);
  });

  it('drops a peer that breaks the protocol, and goes on with the others', async (t) => {
    const { node, friend } = await nodeWithFriend(t);
    const events = record(node.events$);
    const rogue = await rawPeer(t, node.port);
    await waitFor(() => ups(events).length === 1, 'the rogue to be up');
    rogue.sendPayload(Buffer.from('{not json')); // encrypted: it passes the cipher and fails as JSON
    await rogue.closed;
    await waitFor(() => downs(events).length === 1, 'the rogue to be dropped');
    assert.match(downs(events)[0]?.reason ?? '', /ERR_BAD_JSON/);
    await assertUnharmed(node, friend);
  });

  it('seals the frames it writes together as packs to a peer that reads packs, within its limit and 64 KiB; one by one to a peer that does not', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const packing = await rawPeer(t, node.port, { answerPings: true, pack: 1 << 20 });
    const small = await rawPeer(t, node.port, { answerPings: true, pack: 2000 });
    const plain = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 3, 'the raw peers to be up');

    const texts = range(300).map((i) => `line ${i}`);
    node.sendAll(texts);
    const chats = (raw: typeof plain): string[] =>
      raw.frames.flatMap((f) => (f.type === 'chat' ? [f.text] : []));
    await waitFor(() => [packing, small, plain].every((raw) => chats(raw).length === 300), 'all 300 at each');

    for (const raw of [packing, small, plain]) assert.deepEqual(chats(raw), texts, 'every frame, in order');
    // 300 messages of ~700 bytes: packs of at most 64 KiB (the node's own bound, under the peer's
    // 1 MiB), so 4 at least, and far fewer sealed messages than frames.
    assert.ok(packing.received.packs >= 4, `${packing.received.packs} packs`);
    assert.ok(packing.received.messages < 100, `${packing.received.messages} sealed messages`);
    assert.ok(packing.received.largestPack <= 64 * 1024, `a pack of ${packing.received.largestPack}`);
    // The peer that reads packs of 2,000 bytes gets packs of two frames at most.
    assert.ok(small.received.packs > 0);
    assert.ok(small.received.largestPack <= 2000, `a pack of ${small.received.largestPack}`);
    assert.equal(plain.received.packs, 0);
    assert.equal(plain.received.messages, plain.frames.length, 'one frame per sealed message');
  });

  it('sends chat frames in the binary encoding to a peer whose hello says it reads them, as JSON to one that does not (a node before it): the same signed messages, its own and relayed', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const inbox = record(node.messages$);
    const modern = await rawPeer(t, node.port, { answerPings: true, binary: true });
    const older = await rawPeer(t, node.port, { answerPings: true });
    const older2 = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 3, 'the raw peers to be up');

    node.sendAll(['one', 'two', 'three']); // a batch: each with its proof
    node.send('alone');
    // In the binary encoding from a peer, relayed on to the older one.
    modern.sendPayload(encodeChat(signedChat(modern.identity, { text: 'from modern', seq: 1 })));
    const chats = (raw: typeof older): ChatFrame[] => raw.frames.filter((f) => f.type === 'chat');
    await waitFor(
      () => chats(modern).length === 4 && chats(older).length === 5 && chats(older2).length === 5,
      'every message at each',
    );

    assert.deepEqual(modern.chatEncodings, { json: 0, binary: 4 });
    assert.deepEqual(older.chatEncodings, { json: 5, binary: 0 });
    assert.deepEqual(chats(older2), chats(older), 'each older peer gets the same JSON');
    assert.deepEqual(
      chats(older).map((f) => f.text),
      ['one', 'two', 'three', 'alone', 'from modern'],
    );
    // The same frames either way, and each checks out from its JSON (as a node before binary checks it).
    assert.deepEqual(chats(older).slice(0, 4), chats(modern));
    const check = chatProblemChecker(networkTag());
    for (const frame of chats(older)) assert.equal(check(frame), undefined, frame.text);
    assert.deepEqual(
      inbox.values.map((m) => m.text),
      ['from modern'],
    );
  });

  it('leaves a message out for a peer that does not read binary when its JSON is over the frame limit (control characters: six bytes each), logs it, and goes on', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({ maxFrameBytes: 64 * 1024, log });
    const modern = await rawPeer(t, node.port, { answerPings: true, binary: true });
    const older = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 2, 'the raw peers to be up');

    const controls = signedChat(modern.identity, { text: '\u0001'.repeat(16_000), seq: 1 });
    assert.ok(encodeChat(controls).length < 20_000 && serializeFrame(controls).length > 64 * 1024);
    modern.sendPayload(encodeChat(controls));
    modern.sendPayload(encodeChat(signedChat(modern.identity, { text: 'after it', seq: 2 })));
    const texts = (): string[] => older.frames.flatMap((f) => (f.type === 'chat' ? [f.text] : []));
    await waitFor(() => texts().includes('after it'), 'the next message at the older peer');
    assert.deepEqual(texts(), ['after it']);
    assert.equal(log.count('over the frame limit'), 1);
    assert.equal(node.peers().length, 2, 'both peers still connected');
  });

  it('takes every frame of a pack in order, a copy in it once', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const inbox = record(node.messages$);
    const raw = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the raw peer to be up');

    const frames = range(3).map((i) =>
      serializeFrame(signedChat(raw.identity, { text: `packed ${i}`, seq: i + 1 })),
    );
    raw.sendPack([...frames, frames[1]!]);
    raw.sendPack([frames[2]!, serializeFrame(signedChat(raw.identity, { text: 'barrier', seq: 4 }))]);
    await waitFor(() => inbox.values.some((m) => m.text === 'barrier'), 'the second pack');
    assert.deepEqual(
      inbox.values.map((m) => m.text),
      ['packed 0', 'packed 1', 'packed 2', 'barrier'],
    );
  });

  it('drops a peer whose pack is malformed or over the limit, and takes nothing of that pack', async (t) => {
    const { node, friend } = await nodeWithFriend(t);
    const inbox = record(node.messages$);
    const events = record(node.events$);
    const lengthOf = (n: number): Buffer => {
      const out = Buffer.alloc(4);
      out.writeUInt32BE(n, 0);
      return out;
    };
    const cases: Array<[string, (fine: Buffer) => Buffer, RegExp]> = [
      // The second frame claims more bytes than the pack has left.
      [
        'a length past the end',
        (fine) =>
          Buffer.concat([
            Buffer.from([PACK_MARKER]),
            lengthOf(fine.length),
            fine,
            lengthOf(1000),
            Buffer.from('{}'),
          ]),
        /ERR_BAD_PACK/,
      ],
      // Over the 64 KiB this node says it reads (a valid pack otherwise).
      ['a pack over 64 KiB', (fine) => pack([fine, Buffer.alloc(64 * 1024, 0x20)]), /ERR_BAD_PACK/],
      // A pack inside a pack: its frames are JSON, and a pack is not.
      ['a pack in a pack', (fine) => pack([fine, pack([fine])]), /ERR_BAD_JSON/],
    ];
    for (const [i, [what, build, reason]] of cases.entries()) {
      const raw = await rawPeer(t, node.port, { answerPings: true });
      await waitFor(() => ups(events).length === i + 1, `raw peer ${i} to be up`);
      const fine = serializeFrame(signedChat(raw.identity, { text: `fine ${i}`, seq: 1 }));
      raw.sendPayload(build(fine));
      await raw.closed;
      await waitFor(() => downs(events).length === i + 1, `the peer sending ${what} to be dropped`);
      assert.match(downs(events)[i]?.reason ?? '', reason, what);
      if (i < 2) assert.ok(!inbox.values.some((m) => m.text === `fine ${i}`), `nothing of ${what} is taken`);
    }
    await assertUnharmed(node, friend);
  });

  it('close resolves once every socket is closed, and completes its streams', async (t) => {
    const start = nodeFactory(t);
    const upstream = await start({ nick: 'upstream' });
    const node = await start({ nick: 'node', peers: [loopback(upstream.port)] });
    const downstream = await start({ nick: 'downstream', peers: [loopback(node.port)] });
    await waitFor(() => connectedTo(node, [upstream, downstream]), 'node to have both peers');
    const raw = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 3, 'the raw peer to be up');
    const messages = record(node.messages$);
    const lists = record(node.peers$);
    const events = record(node.events$);
    const upstreamEvents = record(upstream.events$);
    const downstreamEvents = record(downstream.events$);

    const closing = node.close();
    assert.equal(node.close(), closing, 'idempotent');
    await closing;

    assert.equal(messages.completed, true, 'messages$ completes');
    assert.equal(lists.completed, true, 'peers$ completes');
    assert.equal(events.completed, true, 'events$ completes');
    assert.deepEqual(lists.values.at(-1), [], 'the last list is empty');
    assert.equal(downs(events).length, 3, 'every peer reported down');
    assert.equal(establishedOn([node.port]), 0, 'no connection to its port is left');
    assert.equal(raw.socket.destroyed, true, 'the raw peer saw the close');
    assert.throws(() => node.send('too late'), RangeError);
    node.connect(loopback(upstream.port)); // a no-op once closed
    await waitFor(
      () => downs(upstreamEvents).length === 1 && downs(downstreamEvents).length === 1,
      'peers to notice',
    );
    for (const events of [upstreamEvents, downstreamEvents]) {
      assert.equal(downs(events)[0]?.peer.id, node.id);
      assert.match(downs(events)[0]?.reason ?? '', /shut ?down/i);
    }
    assert.equal(peerIds(upstream).includes(node.id), false);
  });

  it('clears the connect timeout of a dial that close() ends before it connected', async (t) => {
    const timers = liveTimers(t);
    const start = nodeFactory(t);
    const connectTimeoutMs = 7777; // set with this delay, and nothing else is
    const node = await start({ timing: { connectTimeoutMs } });
    const dead = await deadEnds(t);
    node.connect(dead.addresses[0]!);
    assert.equal(timers.count(connectTimeoutMs), 1, 'the connect timeout');
    await node.close(); // in the same turn: the dial has not connected yet
    // Before: it lived on after the close, for the whole timeout.
    assert.equal(timers.count(connectTimeoutMs), 0, 'connect timeouts left');
  });

  it('refuses peers beyond maxPeers with a bye naming the reason, sent instead of its hello', async (t) => {
    const start = nodeFactory(t);
    const fullLog = lineLogger();
    const full = await start({ maxPeers: 1, log: fullLog });
    const lists = record(full.peers$);
    const fullEvents = record(full.events$);
    const first = await start({ peers: [loopback(full.port)] });
    await waitFor(() => connectedTo(full, [first]), 'the first peer to connect');
    const extraLog = lineLogger();
    const extra = await start({ peers: [loopback(full.port)], log: extraLog });
    const events = record(extra.events$);

    await waitFor(
      () => extraLog.count('refused the connection: full') >= 2,
      'the extra node to be refused, twice',
    );
    // The refusal comes instead of the full node's hello: the extra node never saw it as a peer.
    assert.deepEqual(events.values, [], 'no peer-up or peer-down on the refused side');
    assert.ok(fullLog.count(`refusing peer ${extra.id.slice(0, 8)} at`) >= 2, fullLog.lines.join('\n'));
    assert.ok(
      lists.values.every((l) => l.length <= 1),
      'never more than maxPeers',
    );
    assert.deepEqual(peerIds(full), [first.id]);
    assert.deepEqual(peerIds(extra), []);
    assert.deepEqual(
      ups(fullEvents).map((e) => e.peer.id),
      [first.id],
    );
    assert.deepEqual(downs(fullEvents), []);
  });

  it('holds a slot for a node it sent its hello to until that node’s hello comes: a later one is refused, never the node told it was welcome', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ maxPeers: 1, log: lineLogger() });
    const events = record(node.events$);
    // The first peer has the node's hello (a node would report it up now), and its own is slow.
    const welcomed = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => welcomed.got('hello'), 'the node’s hello to the first peer');
    const later = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => later.got('hello') || later.got('bye'), 'the node to answer the second peer');
    later.hello();
    welcomed.hello();
    await waitFor(
      () => welcomed.got('peers') || welcomed.got('bye'),
      'the node to take or refuse the first peer',
    );
    assert.ok(!welcomed.got('bye'), 'the peer the node said hello to was not refused as full after it');
    assert.ok(
      later.got('bye', 'full') && !later.got('hello'),
      'the later peer was refused instead of greeted',
    );
    assert.deepEqual(peerIds(node), [welcomed.id]);
    assert.deepEqual(
      events.values.map((e) => [e.type, e.peer.id]),
      [['peer-up', welcomed.id]],
    );
  });

  it('with room for one peer, dials three at once and never shows itself to the two it refuses: no peer-up, no peer-down there', async (t) => {
    const start = nodeFactory(t);
    const logs = range(3).map(() => lineLogger());
    const others = await Promise.all(logs.map((log) => start({ log })));
    const events = others.map((other) => record(other.events$));
    // It dials, so each hello of theirs comes a round trip after its own: time to adopt another.
    const node = await start({ maxPeers: 1, peers: others.map((other) => loopback(other.port)) });
    await waitFor(() => node.peers().length === 1, 'one peer');
    const kept = others.findIndex((other) => other.id === node.peers()[0]!.id);
    const refused = range(3).filter((i) => i !== kept);
    await waitFor(
      () =>
        refused.every((i) => logs[i]!.count('refused the connection') > 0 || downs(events[i]!).length > 0),
      'the two others to be refused',
    );
    for (const i of refused) assert.deepEqual(events[i]!.values, [], 'events of a refused node');
    assert.equal(ups(events[kept]!).length, 1);
    assert.deepEqual(downs(events[kept]!), []);
  });

  it('frees the slot held for a node that never says hello when its connection closes or its hello times out', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ maxPeers: 1 });
    const events = record(node.events$);
    const gone = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => gone.got('hello'), 'the node’s hello to the first peer');
    gone.socket.destroy(); // it leaves before its hello
    const silent = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => silent.got('hello') || silent.got('bye'), 'the node to answer the second peer');
    assert.ok(silent.got('hello'), 'the slot of a closed connection was freed at once');
    const openedAt = Date.now();
    await silent.closed; // it never says hello: dropped at the hello timeout
    assert.ok(Date.now() - openedAt < 2 * FAST_TIMING.helloTimeoutMs!, 'dropped at the hello timeout');
    const third = await rawPeer(t, node.port);
    await waitFor(() => third.got('peers') || third.got('bye'), 'the node to take or refuse the third peer');
    assert.ok(third.got('peers'), 'the slot held for a silent peer was freed at its hello timeout');
    assert.deepEqual(
      events.values.map((e) => [e.type, e.peer.id]),
      [['peer-up', third.id]],
    );
  });

  it('backs off from a node that says hello and hangs up at once, as from one that refuses it', async (t) => {
    // A listener that completes the handshake, says hello and closes 20 ms later, every time: the
    // link was up, but not for long enough to count as one that worked.
    const identity = generateIdentity();
    let accepted = 0;
    const server = createServer((socket) => {
      accepted++;
      socket.on('error', () => {});
      const handshake = createHandshake({ initiator: false, identity });
      const decoder = new FrameDecoder(MAX_HANDSHAKE_MESSAGE_BYTES);
      let session: SecureSession | undefined;
      socket.on('data', (chunk: Buffer) => {
        for (const raw of decoder.push(chunk)) {
          if (session !== undefined) continue;
          const step = handshake.receive(raw);
          if (step.reply !== undefined) socket.write(encodeFrame(step.reply));
          if (step.session === undefined) continue;
          session = step.session;
          decoder.maxFrameBytes = 1 << 20;
          const hello = { type: 'hello', v: PROTOCOL_VERSION, id: identity.id, nick: 'x', port: 1 } as const;
          socket.write(encodeFrame(session.encrypt(serializeFrame(hello))));
          setTimeout(() => socket.destroy(), 20);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
    t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const start = nodeFactory(t);
    const node = await start({
      peers: [loopback((server.address() as { port: number }).port)],
      timing: { backoff: { baseMs: 100, maxMs: 1000 } },
    });
    const events = record(node.events$);

    await waitFor(() => ups(events).length >= 5, 'five links up', 8000);
    const upAt = events.at.filter((_, i) => events.values[i]!.type === 'peer-up');
    const elapsed = upAt[4]! - upAt[0]!;
    // As after a refusal: retries 1..4 wait at least half their ceilings, 100·2^k capped at 1 s, so
    // 100 + 200 + 400 + 500 ms between the first and the fifth. Counted as links that worked, each
    // reset the backoff: a redial 50-100 ms after each, with a peer-up and a peer-down, for ever.
    assert.ok(elapsed >= 1200, `four redials of a node that hangs up took only ${elapsed} ms: no backoff`);
    assert.ok(accepted >= 5);
  });

  it('at maxPeers dials no given address (it would refuse the node itself), and dials it again once a peer leaves', async (t) => {
    const start = nodeFactory(t);
    const port = await freePort(); // nothing there yet: each dial is refused at once, and retried
    const node = await start({ maxPeers: 1, peers: [loopback(port)] });
    // A peer fills the node; it answers pings: each ping is one upkeep tick of the node.
    const peer = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the node full');
    const accepted = await listenOn(t, port);
    await upkeepTicks(peer, 3);
    // Before: redialled with backoff (at most 200 ms apart here) while full.
    assert.equal(accepted(), 0, 'dials of the given address while full');
    peer.socket.destroy();
    await waitFor(() => accepted() > 0, 'the node to dial the given address once its peer left');
  });

  it('at maxPeers, connect() does not dial, says so, and dials once a peer leaves', async (t) => {
    const start = nodeFactory(t);
    const log = lineLogger();
    const node = await start({ maxPeers: 1, log });
    const peer = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the node full');
    const dead = await deadEnds(t);
    assert.equal(node.connect(dead.addresses[0]!), 'full');
    assert.equal(
      log.count(`not dialling ${dead.addresses[0]!} now: already 1 peer, or about to be`),
      1,
      log.lines.join('\n'),
    );
    await upkeepTicks(peer, 3);
    assert.equal(dead.accepted(), 0, 'dials while full');
    peer.socket.destroy();
    await waitFor(() => dead.accepted() > 0, 'the node to dial the address once its peer left');
  });

  it('counts a slot held for a node it said hello to as taken: full with it, connect() does not dial until it is freed', async (t) => {
    const start = nodeFactory(t);
    // No upkeep tick within the test: the freed slot itself has the address dialled.
    const timing = { helloTimeoutMs: 10_000, pingIntervalMs: 20_000, peerTimeoutMs: 60_000 };
    const node = await start({ maxPeers: 1, timing });
    const held = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => held.got('hello'), 'the node’s hello to the first peer');
    const dead = await deadEnds(t);
    // Before: 'dialling', and the dial was refused by the node itself at the end of its handshake.
    assert.equal(node.connect(dead.addresses[0]!), 'full');
    assert.equal(node.stats().dialsInFlight, 0);
    held.socket.destroy(); // it leaves before its hello: the slot is free
    await waitFor(() => dead.accepted() > 0, 'the node to dial the address once the slot was freed');
  });

  it('dials a waiting address at once when a peer leaves while another slot is held for a handshake', async (t) => {
    const start = nodeFactory(t);
    // No upkeep tick within the test: the peer leaving itself has the address dialled.
    const timing = { helloTimeoutMs: 10_000, pingIntervalMs: 20_000, peerTimeoutMs: 60_000 };
    const node = await start({ maxPeers: 2, timing });
    const peer = await rawPeer(t, node.port);
    await waitFor(() => node.peers().length === 1, 'the first peer up');
    const held = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => held.got('hello'), 'the node’s hello to the second peer');
    const dead = await deadEnds(t);
    assert.equal(node.connect(dead.addresses[0]!), 'full');
    peer.socket.destroy(); // one peer and one held slot of two: a slot is free
    await waitFor(() => node.peers().length === 0, 'the peer to go');
    await waitFor(() => dead.accepted() > 0, 'the node to dial the address once the peer left');
  });

  it('at maxPeers, connect() to the address of a node that is its peer already dials it, to learn who is there', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ maxPeers: 1 });
    const peer = await start({ peers: [loopback(node.port)] }); // its hello names its own address
    await waitFor(() => connectedTo(node, [peer]), 'the peer to connect');
    // The hello is the peer's word only: a dial of the address tells, and takes no slot if it finds
    // the peer. Before: 'full', and the address was never dialled while the peer stayed.
    assert.equal(node.connect(loopback(peer.port)), 'dialling');
    assert.equal(node.connect(loopback(peer.port)), 'already-dialling');
    await waitFor(() => node.connect(loopback(peer.port)) === 'connected', 'the dial to find the peer');
    assert.deepEqual(peerIds(node), [peer.id]);
  });

  it('does not dial a given address while the last slot is held for a node it said hello to', async (t) => {
    const start = nodeFactory(t);
    const port = await freePort(); // nothing there yet: each dial is refused at once, and retried
    const node = await start({ maxPeers: 2, peers: [loopback(port)], timing: { helloTimeoutMs: 10_000 } });
    // A peer that answers pings (each ping is one upkeep tick of the node), and one whose hello is slow.
    const peer = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 1, 'the first peer up');
    const held = await rawPeer(t, node.port, { deferHello: true });
    await waitFor(() => held.got('hello'), 'the node’s hello to the second peer');
    const accepted = await listenOn(t, port);
    await upkeepTicks(peer, 3);
    // Before: redialled with backoff (at most 200 ms apart here), then refused by the node itself.
    assert.equal(accepted(), 0, 'dials of the given address while the last slot was held');
    held.socket.destroy();
    await waitFor(() => accepted() > 0, 'the node to dial the given address once the slot was freed');
  });

  it('backs off from a node that keeps refusing it as full', async (t) => {
    const start = nodeFactory(t);
    const full = await start({ maxPeers: 1 });
    const first = await start({ peers: [loopback(full.port)] });
    await waitFor(() => connectedTo(full, [first]), 'the first peer to connect');
    const extraLog = lineLogger();
    await start({ peers: [loopback(full.port)], log: extraLog });

    const refusedLine = 'refused the connection: full';
    await waitFor(() => extraLog.count(refusedLine) >= 5, 'five refusals', 5000);
    const refusals = extraLog.times(refusedLine);
    const elapsed = refusals[4]! - refusals[0]!;
    // A refusal is a failed dial: retries 1..4 wait at least half their ceilings, 20·2^k capped at
    // 200 ms, so 20 + 40 + 80 + 100 ms. Redialling at the base delay (10-20 ms) hammers the full node.
    assert.ok(elapsed >= 230, `four redials of a full node took only ${elapsed} ms: no backoff`);
  });

  it('takes a new peer while connections that never speak hold every handshake slot, closing the oldest of them', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ timing: { helloTimeoutMs: 10_000 } });
    // 64 TCP connections that send nothing (loopback: no per-host accept rate), each one held until
    // its hello timeout: new peers were refused for as long as they were renewed.
    const squatters = range(64).map(() => connect({ host: HOST, port: node.port }).on('error', () => {}));
    t.after(() => squatters.forEach((socket) => socket.destroy()));
    await Promise.all(squatters.map((socket) => once(socket, 'connect')));
    const peer = await rawPeer(t, node.port);
    await waitFor(() => peer.got('peers'), 'the new peer to be taken');
    await closed(squatters[0]!); // the oldest made room
    assert.deepEqual(peerIds(node), [peer.id]);
  });

  it('makes room for a new connection by closing a socket that sent nothing, not an older handshake under way', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ timing: { helloTimeoutMs: 10_000 } });
    // The oldest: a client that sent its first handshake message, has the node's answer, and has
    // not sent the last one yet (a round trip away, on a slow link).
    const identity = generateIdentity();
    const handshake = createHandshake({ initiator: true, identity });
    const decoder = new FrameDecoder(MAX_HANDSHAKE_MESSAGE_BYTES);
    const answers: Buffer[] = [];
    const honest = connect({ host: HOST, port: node.port }).on('error', () => {});
    t.after(() => honest.destroy());
    honest.on('data', (chunk: Buffer) => answers.push(...decoder.push(chunk)));
    await once(honest, 'connect');
    honest.write(encodeFrame(handshake.start()!));
    await waitFor(() => answers.length === 1, "the node's answer");
    // 63 newer connections that send nothing take the other handshake slots.
    const squatters = range(63).map(() => connect({ host: HOST, port: node.port }).on('error', () => {}));
    t.after(() => squatters.forEach((socket) => socket.destroy()));
    await Promise.all(squatters.map((socket) => once(socket, 'connect')));
    const peer = await rawPeer(t, node.port);
    await waitFor(() => peer.got('peers'), 'the new peer to be taken');

    // Before: the honest client was the one closed, the oldest before its hello.
    const { reply, session } = handshake.receive(answers[0]!);
    honest.write(encodeFrame(reply!));
    const port = await freePort();
    const hello = { type: 'hello', v: PROTOCOL_VERSION, id: identity.id, nick: 'honest', port } as const;
    honest.write(encodeFrame(session!.encrypt(serializeFrame(hello))));
    await waitFor(() => peerIds(node).includes(identity.id), 'the honest client to be up');
    await waitFor(() => squatters[0]!.destroyed, 'the oldest silent socket to be closed');
    assert.ok(
      squatters.slice(1).every((socket) => !socket.destroyed),
      'one silent socket was closed',
    );
  });

  it('drops a connection that sends no hello within helloTimeoutMs', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const events = record(node.events$);
    const openedAt = Date.now();
    const socket = connect({ host: HOST, port: node.port });
    socket.on('error', () => {});
    socket.resume(); // the node, the responder, sends nothing before a first handshake message
    t.after(() => socket.destroy());
    await closed(socket);
    assert.ok(Date.now() - openedAt >= FAST_TIMING.helloTimeoutMs! - 5, 'not dropped before its time was up');
    assert.deepEqual(events.values, []);
    assert.deepEqual(node.peers(), []);
  });

  it('refuses a gapRepairMs that a sync cannot carry as its minAgeMs, at creation', async (t) => {
    const start = nodeFactory(t);
    for (const gapRepairMs of [0, 250.5, 60_001]) {
      await assert.rejects(
        start({ timing: { ...FAST_TIMING, gapRepairMs } }),
        RangeError,
        String(gapRepairMs),
      );
    }
  });

  it('refuses any timer that is not a whole number of ms in its range, at creation', async (t) => {
    const start = nodeFactory(t);
    const tooLong = 2 ** 31; // setTimeout would fire it at once
    const bad: NodeTiming[] = [
      ...(
        [
          'helloTimeoutMs',
          'pingIntervalMs',
          'peerTimeoutMs',
          'connectTimeoutMs',
          'peerListDelayMs',
          'rateResyncDelayMs',
        ] as const
      ).flatMap((name) => [0, -5, 1.5, Number.NaN, Infinity, tooLong].map((ms) => ({ [name]: ms }))),
      { antiEntropyMs: 0 },
      { antiEntropyMs: 120_001 }, // half of it, a sync's minAgeMs, over a minute: peers would refuse the sync
      { backoff: { baseMs: 0 } },
      { backoff: { maxMs: tooLong } },
    ];
    for (const timing of bad) {
      await assert.rejects(
        start({ timing: { ...FAST_TIMING, ...timing } }),
        RangeError,
        JSON.stringify(timing),
      );
    }
    // A plain-JavaScript caller's undefined takes the default, as a missing field does.
    const defaults = { helloTimeoutMs: undefined, backoff: { maxMs: undefined } } as unknown as NodeTiming;
    (await start({ timing: { ...FAST_TIMING, ...defaults } })).peers();
    // The bounds themselves are fine.
    const node = await start({
      timing: { ...FAST_TIMING, antiEntropyMs: 120_000, peerTimeoutMs: tooLong - 1 },
    });
    assert.equal(node.peers().length, 0);
  });

  it('refuses a history age under 10 minutes at creation: a message older than the age is refused, so a peer whose clock lags a little was not heard', async (t) => {
    const start = nodeFactory(t);
    for (const maxAgeMs of [1_000, 599_999]) {
      await assert.rejects(
        start({ history: { maxAgeMs } }),
        /^RangeError: history: maxAgeMs must be at least 600000/,
        String(maxAgeMs),
      );
    }
    (await start({ history: { maxAgeMs: 600_000 } })).peers();
  });

  it('refuses a history of more than MAX_HISTORY_MESSAGES (1,000,000) messages at creation', async (t) => {
    const start = nodeFactory(t);
    assert.equal(MAX_HISTORY_MESSAGES, 1_000_000);
    await assert.rejects(
      start({ history: { maxMessages: MAX_HISTORY_MESSAGES + 1 } }),
      /^RangeError: history: maxMessages must be at most 1000000, got 1000001$/,
    );
    (await start({ history: { maxMessages: MAX_HISTORY_MESSAGES } })).peers();
  });

  it('refuses bad writer options at creation, before it listens, not at its first connection', async (t) => {
    const start = nodeFactory(t);
    for (const writer of [{ flushBytes: 0 }, { maxOutboxBytes: 1.5 }, { drainTimeoutMs: -1 }]) {
      await assert.rejects(start({ writer }), RangeError, JSON.stringify(writer));
    }
  });

  it('refuses bad rate limits at creation, naming the limit, not at its first connection', async (t) => {
    const start = nodeFactory(t);
    const bad = [
      { peerFrames: { perSecond: 0, burst: 10 } },
      { peerSyncs: { perSecond: 10, burst: -1 } },
      { peerSyncs: { perSecond: Number.NaN, burst: 1 } },
    ];
    for (const limits of bad) {
      await assert.rejects(
        start({ limits }),
        new RegExp(`^RangeError: ${Object.keys(limits)[0]}:`),
        JSON.stringify(limits),
      );
    }
  });

  it('refuses an advertised address its peers could not read, at creation', async (t) => {
    const start = nodeFactory(t);
    for (const advertise of [
      { host: 'not a host', port: 8001 },
      { host: '127.0.0.1', port: 0 },
      { host: '127.0.0.1', port: 65536 },
      { host: '0.0.0.0', port: 8001 },
    ]) {
      // Every peer dropped such a node at its hello (ERR_BAD_FRAME: a malformed address).
      await assert.rejects(start({ advertise }), /^RangeError: advertise: /, JSON.stringify(advertise));
    }
  });

  it('refuses a maxFrameBytes over the longest message the history keeps, at creation, and takes one of that length', async (t) => {
    const start = nodeFactory(t);
    assert.equal(MAX_PAYLOAD_BYTES, 16 * 1024 * 1024 - 6);
    // Before: a message of MAX_PAYLOAD_BYTES + 1 bytes went through dedup (its id marked seen) and
    // the history did not take it: never shown, never relayed, a gap asked for forever.
    for (const maxFrameBytes of [MAX_PAYLOAD_BYTES + 1, 2 ** 32, 0, 1.5]) {
      await assert.rejects(start({ maxFrameBytes }), /^RangeError: maxFrameBytes /, String(maxFrameBytes));
    }
    // At the bound, a frame of the full length is a message the node keeps and shows.
    const node = await start({ maxFrameBytes: MAX_PAYLOAD_BYTES });
    const inbox = record(node.messages$);
    const raw = await rawPeer(t, node.port, { answerPings: true, maxMessageBytes: MAX_PAYLOAD_BYTES });
    await waitFor(() => node.peers().length === 1, 'the peer up');
    const json = serializeFrame(signedChat(raw.identity, { text: 'the longest', seq: 1 }));
    // JSON.parse takes trailing spaces: the frame is exactly as long as the node reads.
    raw.sendPayload(Buffer.concat([json, Buffer.alloc(MAX_PAYLOAD_BYTES - json.length, ' ')]));
    // 16 MiB to read, parse and verify: ~1 s alone, over 10 s in a full `npm test` on 2 busy cores.
    await waitFor(() => inbox.values.some((m) => m.text === 'the longest'), 'the message shown', 30_000);
    assert.equal(node.stats().historySize, 1);
  });

  it('refuses a maxFrameBytes under MIN_FRAME_BYTES at creation; at the bound, the largest hello fits and peers come up', async (t) => {
    const start = nodeFactory(t);
    assert.equal(MIN_FRAME_BYTES, 1024);
    // Before: a node of 100 bytes was created, and its first peer's handshake threw "frame of 141
    // bytes, the limit is 100" from its hello, out of the pipeline: the process died.
    for (const maxFrameBytes of [MIN_FRAME_BYTES - 1, 100, 1]) {
      await assert.rejects(
        start({ maxFrameBytes }),
        /^RangeError: maxFrameBytes must be at least 1024 \(the largest hello must fit/,
        String(maxFrameBytes),
      );
    }
    // The largest hello: 32 letters of 3 bytes each, a host name of 253 characters, numbers at
    // their largest; and a peer list of one such entry.
    const host = `${'a'.repeat(63)}.`.repeat(3) + 'a'.repeat(61);
    const addr = `${host}:65535`;
    const largest = {
      type: 'hello',
      v: PROTOCOL_VERSION,
      id: 'f'.repeat(32),
      nick: '€'.repeat(32),
      port: 65535,
    };
    const hello = serializeFrame({
      ...largest,
      addr,
      pack: 65_536,
      binary: true,
      seq: Number.MAX_SAFE_INTEGER,
      ts: Number.MAX_SAFE_INTEGER,
    } as HelloFrame);
    assert.ok(hello.length <= MIN_FRAME_BYTES, `a hello of ${hello.length} bytes`);
    const list = serializeFrame({ type: 'peers', peers: [{ id: 'f'.repeat(32), addr }] });
    assert.ok(list.length <= MIN_FRAME_BYTES, `a peer list of ${list.length} bytes`);
    const a = await start({
      nick: '€'.repeat(32),
      advertise: { host, port: 65535 },
      maxFrameBytes: MIN_FRAME_BYTES,
    });
    const b = await start({ maxFrameBytes: MIN_FRAME_BYTES, peers: [loopback(a.port)] });
    await waitFor(() => a.peers().length === 1 && b.peers().length === 1, 'a and b up');
    assert.equal(b.peers()[0]!.nick, '€'.repeat(32));
    const inbox = record(b.messages$);
    const sent = a.send('short enough');
    await waitFor(() => times(inbox, sent.id) === 1, 'the message at b');
  });

  it('refuses to send a text whose frame is over maxFrameBytes, sending none of the batch, and sends the longest that fits', async (t) => {
    const start = nodeFactory(t);
    const maxFrameBytes = 8 * 1024;
    const node = await start({ nick: 'ann', maxFrameBytes });
    const watcher = await rawPeer(t, node.port, { answerPings: true, binary: true });
    await waitFor(() => node.peers().length === 1, 'the watcher up');
    // Before: send() returned, and writing the frame to the watcher threw "frame of 8193 bytes, the
    // limit is 8192" out of the pipeline: the process died.
    const overhead = 175; // a binary chat frame of ann's, without a proof, less its text
    const fits = 'x'.repeat(maxFrameBytes - overhead);
    assert.throws(
      () => node.send(`${fits}x`),
      /^RangeError: send: a text of 8018 bytes of UTF-8 makes a frame of 8193 bytes, over maxFrameBytes \(8192\)$/,
    );
    // Counted in UTF-8: a 3-byte character where a 1-byte one fits is over.
    assert.throws(() => node.send(`${fits.slice(1)}€`), /over maxFrameBytes/);
    // In a batch, each frame carries its proof (a hash per level): the one that fits alone is over.
    assert.throws(() => node.sendAll(['first', fits]), /over maxFrameBytes/);
    assert.deepEqual(node.history(), []);
    const sent = node.send(fits);
    assert.equal(sent.seq, 1, 'no sequence number used by the refused ones');
    await waitFor(() => watcher.frames.some((f) => f.type === 'chat'), 'the message at the watcher');
    const chat = watcher.frames.find((f): f is ChatFrame => f.type === 'chat')!;
    assert.equal(chat.id, sent.id);
    assert.equal(encodeChat(chat).length, maxFrameBytes, 'a frame of exactly the limit');
    assert.equal(node.peers().length, 1);
  });

  it('cuts a peer list to the frame limit: of five long host names at 1 KiB three fit, and a short one after them', async (t) => {
    const start = nodeFactory(t);
    const node = await start({ maxFrameBytes: MIN_FRAME_BYTES, timing: { peerListDelayMs: 10 } });
    const host = `${'b'.repeat(63)}.`.repeat(3) + 'b'.repeat(61);
    const named: RawPeer[] = [];
    for (let i = 0; i < 5; i++) {
      const peer = await rawPeer(t, node.port, { answerPings: true, deferHello: true });
      peer.hello({ addr: `${host}:${9000 + i}` });
      named.push(peer);
    }
    await waitFor(() => node.peers().length === 5, 'the five peers up');
    // A short name after them: the entries that do not fit are left out, not the rest of the list.
    const short = await rawPeer(t, node.port, { answerPings: true, deferHello: true });
    short.hello({ addr: '127.0.0.1:9100' });
    await waitFor(() => node.peers().length === 6, 'the sixth peer up');
    const watcher = await rawPeer(t, node.port, { answerPings: true });
    await waitFor(() => node.peers().length === 7, 'the watcher up');
    // Before: the first list over the limit (four names, to each of the first peers) threw "frame of
    // 1266 bytes, the limit is 1024" out of the pipeline: the node's inbound stream died with it.
    await waitFor(
      () =>
        watcher.frames.some(
          (f) => f.type === 'peers' && f.peers.length === 4 && f.peers.some((p) => p.id === short.id),
        ),
      'a list of three long names and the short one at the watcher',
    );
    for (const frame of watcher.frames) {
      if (frame.type !== 'peers') continue;
      assert.ok(
        serializeFrame(frame).length <= MIN_FRAME_BYTES,
        `a list of ${serializeFrame(frame).length} bytes`,
      );
      assert.ok(frame.peers.length <= 4, `a list of ${frame.peers.length}`);
    }
    await upkeepTicks(watcher, 1);
    assert.equal(node.peers().length, 7, 'every peer still up');
  });

  it('refuses to send an empty or oversized message', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    assert.throws(() => node.send(''), RangeError);
    assert.throws(() => node.send('x'.repeat(MAX_TEXT_LENGTH + 1)), RangeError);
    assert.throws(() => node.setNick(''), RangeError);
    assert.equal(node.send('x'.repeat(MAX_TEXT_LENGTH)).text.length, MAX_TEXT_LENGTH);
  });

  it('refuses a text with a lone surrogate before it sends any of the batch or uses a sequence number', async (t) => {
    const start = nodeFactory(t);
    const node = await start();
    const texts = Array.from({ length: 70 }, (_, i) => `line ${i}`);
    // The bad one in the second signing batch of 64: the first must not have gone out either.
    assert.throws(() => node.sendAll([...texts, 'cut \ud83c']), /lone surrogate/);
    assert.throws(() => node.send('\udc00 cut'), /lone surrogate/);
    assert.deepEqual(node.history(), []);
    assert.equal(node.stats().historySize, 0);
    // A pair is one character, and what follows carries on from seq 1.
    assert.equal(node.send('pair \ud83c\udf0d').seq, 1);
  });
});
