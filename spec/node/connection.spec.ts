/**
 * One Connection on its own: two of them on a real loopback socket pair, each end with a fresh
 * identity (the Noise handshake as the node runs it).
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { Connection, type ConnectionOptions } from '../../lib/node/connection.js';
import { PROTOCOL_VERSION, type Frame } from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import { socketPair, waitFor } from '../helpers/nodes.js';

function options(): ConnectionOptions {
  return {
    maxFrameBytes: 256 * 1024,
    writer: {},
    frameRate: { perSecond: 10_000, burst: 20_000 },
    onWriteFault: () => {},
    security: { identity: generateIdentity(), networkKey: undefined },
  };
}

/** Two connected Connections (`a` accepted, `b` dialled), destroyed after the test. */
async function pair(t: TestContext): Promise<{ a: Connection; b: Connection }> {
  const { client, server } = await socketPair(t);
  const a = new Connection(server, false, options());
  const b = new Connection(client, true, options());
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  return { a, b };
}

describe('Connection', () => {
  it('hands on no frame of a read once it was destroyed while handling an earlier one of that read', async (t) => {
    const { a, b } = await pair(t);
    const hello = (id: string): Frame => ({ type: 'hello', v: PROTOCOL_VERSION, id, nick: 'x', port: 1 });
    const got: Frame['type'][] = [];
    let ended = false;
    a.frames$.subscribe({
      next: ({ frame }) => {
        got.push(frame.type);
        // What the node's drop() does on a write fault, a peer's third invalid message, a timeout.
        if (frame.type === 'ping') a.destroy();
      },
      error: () => (ended = true),
      complete: () => (ended = true),
    });
    let bUp = false;
    b.frames$.subscribe({ next: () => (bUp = true), error: () => {} });
    a.send(hello('a'));
    b.send(hello('b'));
    await waitFor(() => bUp && got.includes('hello'), 'the handshake and both hellos');
    // Three pings in one turn: one write, one read at `a`.
    for (let n = 1; n <= 3; n++) b.send({ type: 'ping', n });
    await waitFor(() => ended || got.includes('ping'), 'the first ping');
    await waitFor(() => ended, 'the frames to end');
    assert.deepEqual(
      got.filter((type) => type === 'ping'),
      ['ping'],
      `frames handled: ${got.join(', ')}`,
    );
  });
});
