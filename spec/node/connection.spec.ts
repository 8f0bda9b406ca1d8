/**
 * One Connection on its own: two of them on a real loopback socket pair, each end with a fresh
 * identity (the Noise handshake as the node runs it).
 */
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { Connection, type ConnectionOptions } from '../../lib/node/connection.js';
import { PROTOCOL_VERSION, type Frame, type SyncFrame } from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import { socketPair, waitFor } from '../helpers/nodes.js';

function options(
  frameRate = { perSecond: 10_000, burst: 20_000 },
  syncRate = { perSecond: 10, burst: 20 },
): ConnectionOptions {
  return {
    maxFrameBytes: 256 * 1024,
    writer: {},
    frameRate,
    syncRate,
    onWriteFault: () => {},
    security: { identity: generateIdentity(), networkKey: undefined },
  };
}

/** Two connected Connections (`a` accepted, `b` dialled), destroyed after the test. */
async function pair(
  t: TestContext,
  rateOfA?: ConnectionOptions['frameRate'],
): Promise<{ a: Connection; b: Connection; client: Socket }> {
  const { client, server } = await socketPair(t);
  const a = new Connection(server, false, options(rateOfA));
  const b = new Connection(client, true, options());
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  return { a, b, client };
}

const sync = (n: number): SyncFrame => ({ type: 'sync', marks: [], rx: n });

const hello = (id: string): Frame => ({ type: 'hello', v: PROTOCOL_VERSION, id, nick: 'x', port: 1 });

/** Both connections up: the handshake done and each side's hello in. */
async function greeted(a: Connection, b: Connection, onFrame: (frame: Frame) => void): Promise<void> {
  let aGreeted = false;
  let bGreeted = false;
  a.frames$.subscribe({
    next: ({ frame }) => {
      if (frame.type === 'hello') aGreeted = true;
      onFrame(frame);
    },
    error: () => {},
  });
  b.frames$.subscribe({ next: () => (bGreeted = true), error: () => {} });
  a.send(hello('a'));
  b.send(hello('b'));
  await waitFor(() => aGreeted && bGreeted, 'the handshake and both hellos');
}

describe('Connection', () => {
  it('answers syncs within the rate at once, and of those over it only the latest, once a token is there', async (t) => {
    const { client, server } = await socketPair(t);
    const conn = new Connection(server, false, options(undefined, { perSecond: 20, burst: 5 }));
    t.after(() => {
      conn.destroy();
      client.destroy();
    });
    const answered: number[] = [];
    for (let n = 1; n <= 12; n++) conn.takeSync(sync(n), (s) => answered.push(s.rx!));
    assert.deepEqual(answered, [1, 2, 3, 4, 5], 'the burst at once');
    await waitFor(() => answered.length === 6, 'the one kept for a token');
    assert.deepEqual(answered.slice(5), [12], 'the latest, in place of 6-11');
    await delay(300); // the bucket full again
    conn.takeSync(sync(13), (s) => answered.push(s.rx!));
    conn.takeSync(sync(14), (s) => answered.push(s.rx!));
    assert.deepEqual(answered.slice(6), [13, 14], 'a token each, at once');
  });

  it('merges the syncs that wait for a token: the latest marks, the loosest filters, an ask-back kept', async (t) => {
    const { client, server } = await socketPair(t);
    const conn = new Connection(server, false, options(undefined, { perSecond: 20, burst: 1 }));
    t.after(() => {
      conn.destroy();
      client.destroy();
    });
    const answered: SyncFrame[] = [];
    const take = (s: SyncFrame): void => conn.takeSync(s, (a) => answered.push(a));
    take(sync(1)); // the token
    const marks = [{ from: 'z', seq: 3 }];
    // Anti-entropy (asks back), then a full one with a cap, then a gap repair's (holes only, young left out).
    take({ ...sync(2), minAgeMs: 2000, since: 100, max: 50 });
    take({ ...sync(3), max: 10 });
    take({ ...sync(4), marks, busy: true, minAgeMs: 500, max: 5 });
    await waitFor(() => answered.length === 2, 'the merged one');
    // Each filter as loose as its loosest: `busy` only when all had it, `since` absent as one had
    // none, `max` the largest, `minAgeMs` the smallest and 0 for one without: an answer of all the
    // peer lacks (up to 50), and the node still asks back.
    assert.deepEqual(answered[1], { type: 'sync', marks, rx: 4, minAgeMs: 0, max: 50 });
  });

  it('answers no sync that waited for a token once it is destroyed', async (t) => {
    const { client, server } = await socketPair(t);
    const conn = new Connection(server, false, options(undefined, { perSecond: 10, burst: 1 }));
    t.after(() => client.destroy());
    const answered: number[] = [];
    conn.takeSync(sync(1), (s) => answered.push(s.rx!));
    conn.takeSync(sync(2), (s) => answered.push(s.rx!));
    conn.destroy();
    await delay(300); // 3 tokens' time
    assert.deepEqual(answered, [1]);
  });

  it('hands on no frame of a read once it was destroyed while handling an earlier one of that read', async (t) => {
    const { a, b } = await pair(t);
    const pings: number[] = [];
    await greeted(a, b, (frame) => {
      if (frame.type !== 'ping') return;
      pings.push(frame.n);
      a.destroy(); // what the node's drop() does on a write fault, a third invalid message, a timeout
    });
    // Three pings in one turn: one write, one read at `a`.
    for (let n = 1; n <= 3; n++) b.send({ type: 'ping', n });
    await waitFor(() => a.socket.destroyed && pings.length > 0, 'the first ping');
    await delay(50);
    assert.deepEqual(pings, [1]);
  });

  it('ends once however often it is told to: one grace timer and one close listener, the shortest grace kept', async (t) => {
    const { client, server } = await socketPair(t);
    client.pause(); // a peer that does not read: it never sees this end's close, nor closes its own
    const conn = new Connection(server, false, options());
    t.after(() => conn.destroy());
    const listeners = server.listenerCount('close');
    for (let i = 0; i < 20; i++) conn.end(5000); // what each `bye` a peer repeats asked of it
    assert.ok(server.listenerCount('close') <= listeners + 1, `${server.listenerCount('close')} listeners`);
    const began = Date.now();
    conn.end(50); // the node's shutdown, with a shorter grace
    conn.end(5000);
    await waitFor(() => server.destroyed, 'the shorter grace to end it', 2000);
    assert.ok(Date.now() - began < 1000, `destroyed after ${Date.now() - began} ms`);
  });

  it('holds a peer to its frame rate while the connection closes, without pausing its reads', async (t) => {
    const { a, b, client } = await pair(t, { perSecond: 50, burst: 50 });
    let pings = 0;
    await greeted(a, b, (frame) => {
      if (frame.type === 'ping') pings++;
    });
    // A peer that ignores this end's close (FIN) and goes on sending.
    client.allowHalfOpen = true;
    client.destroy = () => client;
    t.after(() => Socket.prototype.destroy.call(client)); // what socketPair's cleanup cannot now
    a.end(2000); // what the node does when the peer says bye, or it retires a connection
    const started = Date.now();
    for (let round = 0; round < 50; round++) {
      for (let n = 0; n < 20; n++) b.send({ type: 'ping', n });
      await delay(10);
    }
    await delay(100);
    const seconds = (Date.now() - started) / 1000;
    // The burst plus the rate over the time it sent, with room for a loaded machine's timers.
    assert.ok(pings <= 50 + 50 * seconds + 50, `${pings} frames handled in ${seconds} s at 50/s`);
    // Read all along: over the rate, a closing connection drops frames rather than pausing (the
    // peer's own close must still be seen).
    assert.equal(a.socket.isPaused(), false, 'the closing connection still reads');
    assert.ok(pings >= 50, `${pings} frames handled: at least the burst`);
  });
});
