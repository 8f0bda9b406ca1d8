/**
 * Several connections of one peer to a node, driven by hand: a peer with one identity opens them on
 * raw sockets (the handshake as a node does it), says hello on each when the test says, answers the
 * node's pings or not, and sends `bye duplicate` as a node does when it keeps another connection.
 * What the node must do: keep one connection per peer, the same one its peer keeps, never one the
 * peer has given up or one that no longer answers, and never make the peer look gone meanwhile.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { NodeEvent, NodeTiming, P2PNode } from '../../lib/node/node.js';
import type { HelloFrame } from '../../lib/protocol/frames.js';
import { generateIdentity, type Identity } from '../../lib/security/identity.js';
import {
  downs,
  lineLogger,
  liveTimers,
  nodeFactory,
  rawPeer,
  record,
  signedChat,
  waitFor,
  type RawPeer,
  type Recording,
} from '../helpers/nodes.js';

/** One connection of the hand-driven peer: handshake done, hello when the test says. */
type Link = RawPeer;

/** `n` connections of one identity, by handshake hash: the node prefers the first of any two. */
async function links(t: TestContext, port: number, identity: Identity, n: number): Promise<Link[]> {
  const all = await Promise.all(
    Array.from({ length: n }, () => rawPeer(t, port, { identity, answerPings: true, deferHello: true })),
  );
  return all.sort((x, y) => Buffer.compare(x.handshakeHash, y.handshakeHash));
}

const pinged = (link: Link): boolean => link.frames.some((f) => f.type === 'ping');

/**
 * Waits until the node has handled everything sent on `link` so far: it answers a ping on the same
 * connection, after the frames before it.
 */
async function handled(link: Link): Promise<void> {
  const n = 1_000_000 + link.frames.length;
  link.send({ type: 'ping', n });
  await waitFor(
    () => link.frames.some((f) => f.type === 'pong' && f.n === n),
    'the node to handle what came before',
  );
}

/** A node, and `n` connections of one peer to it (by handshake hash), the first said hello and adopted. */
async function adopted(
  t: TestContext,
  n: number,
  timing?: NodeTiming,
): Promise<{ node: P2PNode; events: Recording<NodeEvent>; conns: Link[] }> {
  const start = nodeFactory(t);
  const node = await start({ log: lineLogger(), ...(timing === undefined ? {} : { timing }) });
  const events = record(node.events$);
  const conns = await links(t, node.port, generateIdentity(), n);
  conns[0]!.hello();
  await waitFor(() => node.peers().length === 1, 'the first connection to be adopted');
  return { node, events, conns };
}

/**
 * {@link adopted}, and then the first connection silent (it answers no ping) and the second said
 * hello, waiting on the node's probe of the first.
 */
async function probing(
  t: TestContext,
  n: number,
  timing?: NodeTiming,
): Promise<{ node: P2PNode; events: Recording<NodeEvent>; conns: Link[] }> {
  const found = await adopted(t, n, timing);
  const [c1, c2] = found.conns as [Link, Link];
  c1.answersPings = false;
  c2.hello();
  await waitFor(() => pinged(c1), 'the probe');
  return found;
}

/** The process warnings (MaxListenersExceededWarning: a listener added per frame) during the test `t`. */
function warnings(t: TestContext): string[] {
  const seen: string[] = [];
  const onWarning = (warning: Error): void => void seen.push(`${warning.name}: ${warning.message}`);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  return seen;
}

describe('duplicate connections of one peer, driven by hand', () => {
  it('moves to a live new connection although earlier new ones closed while it probed the dead one', async (t) => {
    // A long ping interval: the probes of the dead connection stay pending.
    const { conns } = await adopted(t, 6, { pingIntervalMs: 2000, peerTimeoutMs: 6000 });
    const [kept, ...rest] = conns;
    kept!.answersPings = false; // its host vanished
    // The peer connects again four times, and each of those closes (its own duplicates, a crash).
    for (const again of rest.slice(0, 4)) {
      const pings = kept!.frames.length;
      again.hello();
      await waitFor(() => kept!.frames.length > pings, 'the probe of the first connection');
      again.socket.destroy();
    }
    const live = rest[4]!;
    live.hello();
    await waitFor(
      () => live.got('peers'),
      'the node to move to the live connection within a ping interval',
      3000,
    );
    assert.ok(!live.got('bye', 'duplicate'), 'the live connection was not sent away');
  });

  it('never keeps a connection on which the peer said bye duplicate over the peer’s new one', async (t) => {
    const { events, conns } = await adopted(t, 2);
    const [old, fresh] = conns;
    // The peer keeps another connection (it answers pings on this one until then, as a node does).
    old!.send({ type: 'bye', reason: 'duplicate' });
    await handled(old!);
    fresh!.hello(); // the node prefers `old` by hash, but the peer gave it up
    await waitFor(() => fresh!.got('peers'), 'the node to take the new connection');
    assert.ok(!fresh!.got('bye', 'duplicate'), 'the new connection was not sent away');
    assert.deepEqual(downs(events), []);
  });

  it('takes a bye duplicate the peer repeats on one connection as one: no timer or listener per frame', async (t) => {
    const seen = warnings(t);
    const { node, events, conns } = await adopted(t, 1);
    const [only] = conns;
    for (let i = 0; i < 40; i++) only!.send({ type: 'bye', reason: 'duplicate' });
    await handled(only!);
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
    assert.deepEqual(seen, []);
    assert.equal(node.peers().length, 1, 'kept until its other connection comes, or the hello timeout');
    assert.deepEqual(downs(events), []);
  });

  it('takes the nick of the new hello of a peer of an older build (no seq) when it moves to its connection', async (t) => {
    const node = await nodeFactory(t)({ log: lineLogger() });
    const inbox = record(node.messages$);
    const identity = generateIdentity();
    const [c1, c2] = (await links(t, node.port, identity, 2)) as [Link, Link];
    c1.hello({ nick: 'ann' });
    await waitFor(() => node.peers().length === 1, 'the first connection to be adopted');
    const said = signedChat(identity, { text: 'hi', seq: 5, nick: 'ann' });
    c1.send(said);
    await waitFor(() => inbox.values.some((m) => m.id === said.id), 'its message');
    // It renamed itself and connected again; it says so in its new hello only.
    c1.send({ type: 'bye', reason: 'duplicate' });
    await handled(c1);
    c2.hello({ nick: 'anna' });
    await waitFor(() => c2.got('peers'), 'the node to move to the new connection');
    assert.equal(node.peers()[0]?.nick, 'anna');
  });

  it("keeps the peer's newest nick when it moves to a connection whose hello is older", async (t) => {
    const node = await nodeFactory(t)({ log: lineLogger() });
    const inbox = record(node.messages$);
    const identity = generateIdentity();
    const [c1, c2, c3, c4] = (await links(t, node.port, identity, 4)) as [Link, Link, Link, Link];
    const nick = (): string | undefined => node.peers()[0]?.nick;
    /** The peer gives `from` up and says `hello` on `to`, which the node moves to. */
    const moveTo = async (from: Link, to: Link, hello: Partial<HelloFrame>): Promise<void> => {
      from.send({ type: 'bye', reason: 'duplicate' });
      await handled(from);
      to.hello(hello);
      await waitFor(() => to.got('peers'), 'the node to move to the new connection');
    };
    const t0 = Date.now();
    // The peer sent c2's hello as ann, then c1's; it renamed itself anna and said so on c1.
    c1.hello({ nick: 'ann', seq: 0, ts: t0 + 1 });
    await waitFor(() => node.peers().length === 1, 'the first connection to be adopted');
    const renamed = signedChat(identity, { text: 'hi', seq: 1, nick: 'anna' });
    c1.send(renamed);
    await waitFor(() => inbox.values.some((m) => m.id === renamed.id), 'the message as anna');
    assert.equal(nick(), 'anna');
    // The peer keeps c2 (the two crossed), whose hello is older than the message.
    await moveTo(c1, c2, { nick: 'ann', seq: 0, ts: t0 });
    assert.equal(nick(), 'anna', 'an older hello does not turn the nick back');

    // A hello sent after the message says a newer nick, and one later still (a rename said in no
    // message) a newer one again.
    await moveTo(c2, c3, { nick: 'annabel', seq: 1, ts: t0 + 2 });
    assert.equal(nick(), 'annabel');
    await moveTo(c3, c4, { nick: 'bel', seq: 1, ts: t0 + 3 });
    assert.equal(nick(), 'bel');
  });

  it('hands the place of a connection that closed during a probe to the new one, but not one the peer retired', async (t) => {
    const { events, conns } = await probing(t, 3);
    const [c1, c2, c3] = conns;
    c1!.socket.destroy(); // c1 breaks: c2 takes its place, and the peer never looks gone
    await waitFor(() => c2!.got('peers'), 'c2 to take the place');
    assert.deepEqual(downs(events), []);
    // The peer keeps another connection after all (its bye on c2 was on its way), and dials again.
    c2!.send({ type: 'bye', reason: 'duplicate' });
    await handled(c2!);
    c3!.hello();
    await waitFor(() => c3!.got('peers'), 'the node to take c3');
    assert.ok(!c3!.got('bye', 'duplicate'), 'the peer’s only connection, c3, was not sent away for c2');
  });

  it('does not hand the place to the new connection when the peer says it shuts down on the old one', async (t) => {
    const { events, conns } = await probing(t, 2);
    const [c1, c2] = conns;
    c1!.send({ type: 'bye', reason: 'shutdown' });
    await waitFor(() => downs(events).length === 1, 'the peer to be down');
    assert.deepEqual(
      downs(events).map((e) => e.reason),
      ['it shut down'],
    );
    assert.ok(!c2!.got('peers'), 'the connection of a peer that is going away was not taken up');
  });

  it('keeps a connection that is heard from while its answer to the probe comes late, up to the peer timeout', async (t) => {
    const timing = { pingIntervalMs: 300, peerTimeoutMs: 3000 };
    const { events, conns } = await probing(t, 2, timing);
    const [c1, c2] = conns;
    // c1 is alive and busy: its own frames keep coming, its pong is behind them for 3 intervals.
    const busy = setInterval(() => c1!.send({ type: 'ping', n: 7 }), 100);
    t.after(() => clearInterval(busy));
    await new Promise((resolve) => setTimeout(resolve, 3 * timing.pingIntervalMs));
    for (const f of c1!.frames) if (f.type === 'ping') c1!.send({ type: 'pong', n: f.n });
    await waitFor(() => c2!.got('bye', 'duplicate'), 'the node to retire the new connection');
    clearInterval(busy);
    assert.ok(!c2!.got('peers'), 'the new connection never took the place');
    assert.ok(!c1!.got('bye'), 'the busy connection was not dropped');
    assert.deepEqual(downs(events), []);
  });

  it('drops a connection heard from but never answering the probe, at the peer timeout', async (t) => {
    const timing = { pingIntervalMs: 300, peerTimeoutMs: 1500 };
    const { events, conns } = await probing(t, 2, timing);
    const [c1, c2] = conns;
    const began = Date.now();
    const busy = setInterval(() => c1!.send({ type: 'ping', n: 7 }), 100);
    t.after(() => clearInterval(busy));
    await waitFor(() => c2!.got('peers'), 'the new connection to take the place', 5000);
    clearInterval(busy);
    const waited = Date.now() - began;
    assert.ok(waited >= timing.peerTimeoutMs - 2 * timing.pingIntervalMs, `moved after ${waited} ms`);
    assert.ok(!c2!.got('bye', 'duplicate'), 'the new connection was not sent away');
    assert.deepEqual(downs(events), []);
  });

  it('closes at once while a probe waits (not after its ping interval): one peer-down, events completed', async (t) => {
    const { node, events } = await probing(t, 2, { pingIntervalMs: 5000, peerTimeoutMs: 20000 });
    const began = Date.now();
    await node.close();
    assert.ok(Date.now() - began < 1500, `close took ${Date.now() - began} ms`);
    assert.equal(downs(events).length, 1);
    assert.ok(events.completed);
  });

  it('cancels the timer of a probe when the new connection it was for closes', async (t) => {
    const timers = liveTimers(t);
    const pingIntervalMs = 5000; // the probe's timer: set with this delay, and nothing else is
    const { node, conns } = await probing(t, 2, { pingIntervalMs, peerTimeoutMs: 20000 });
    const [c1, c2] = conns as [Link, Link];
    assert.equal(timers.count(pingIntervalMs), 1, 'the probe timer');
    c2.socket.destroy();
    // Before: it lived on for its ping interval, to find the connection it was for gone.
    await waitFor(() => timers.count(pingIntervalMs) === 0, 'the probe timer to be cleared', 2000);
    assert.deepEqual(
      node.peers().map((p) => p.id),
      [c1.id],
      'the first connection is kept',
    );
  });
});
