import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Procs, type Proc, type ReadyEvent } from '../helpers/procs.js';

/** The frame limit the node enforces (DEFAULT_MAX_FRAME_BYTES), written out as the README states it. */
const LIMIT = 256 * 1024;
/**
 * Hello port of the raw peers that complete a handshake. Nothing listens on port 1, so the dials that
 * peer exchange makes towards it (from the node and the honest peer) are refused at once.
 */
const DEAD_PORT = 1;

function prefix(length: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(length, 0);
  return out;
}

function frame(payload: string | Buffer | object): Buffer {
  const body = Buffer.isBuffer(payload)
    ? payload
    : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload), 'utf8');
  return Buffer.concat([prefix(body.length), body]);
}

function hello(id: string, extra: Record<string, unknown> = {}): object {
  return { type: 'hello', v: 1, id, nick: 'raw', port: DEAD_PORT, ...extra };
}

/** A valid hello payload of exactly `size` bytes (an unknown `pad` field, which receivers drop). */
function paddedHello(id: string, size: number): Buffer {
  const bare = JSON.stringify({ ...hello(id), pad: '' });
  const out = Buffer.from(JSON.stringify({ ...hello(id), pad: 'x'.repeat(size - Buffer.byteLength(bare)) }));
  assert.equal(out.length, size);
  return out;
}

/** A TCP client that speaks whatever bytes a test gives it. */
interface RawPeer {
  readonly socket: Socket;
  /** `127.0.0.1:<its port>`: how the node names it in logs before a hello. */
  readonly addr: string;
  isClosed(): boolean;
  /** Resolves with the time it closed; rejects if it is still open after `timeoutMs`. */
  closed(timeoutMs?: number): Promise<number>;
}

const rawSockets = new Set<Socket>();

async function openRaw(port: number): Promise<RawPeer> {
  const socket = connect({ host: '127.0.0.1', port });
  rawSockets.add(socket);
  socket.on('error', () => {}); // ECONNRESET when the node destroys a socket holding unread bytes
  socket.resume(); // read and discard the node's hello and peer list
  let closedAt: number | undefined;
  const closed = new Promise<number>((resolve) =>
    socket.once('close', () => {
      rawSockets.delete(socket);
      resolve((closedAt = Date.now()));
    }),
  );
  await once(socket, 'connect');
  return {
    socket,
    addr: `127.0.0.1:${socket.localPort}`,
    isClosed: () => closedAt !== undefined,
    closed: (timeoutMs = 3_000) => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        closed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the node did not close ${socket.localPort} within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    },
  };
}

describe('bin/p2p --json: a bad peer on a raw socket is dropped, the node and its honest peer go on', () => {
  const procs = new Procs();
  let node: Proc & { readonly ready: ReadyEvent };
  let honest: Proc & { readonly ready: ReadyEvent };
  let probe = 0;

  before(async () => {
    node = await procs.node({ nick: 'target' });
    honest = await procs.node({ nick: 'honest', peers: [`127.0.0.1:${node.ready.port}`] });
    await Promise.all([node.waitForPeerUp(honest.ready.id), honest.waitForPeerUp(node.ready.id)]);
  });

  after(async () => {
    for (const socket of rawSockets) socket.destroy();
    await procs.stopAll();
  });

  /** The honest peer's next message still reaches the node, which is still running and still linked. */
  async function honestStillHeard(): Promise<void> {
    const text = `honest probe ${++probe}`;
    honest.send(text);
    const message = await node.waitForMessage(text, 5_000);
    assert.equal(message.from, honest.ready.id);
    assert.equal(node.exit, undefined, 'the node is still running');
    process.kill(node.pid, 0); // throws if the pid is gone
    assert.equal(
      node.events.filter((e) => e.event === 'peer-down' && e.peer === honest.ready.id).length,
      0,
      'the honest peer was never dropped',
    );
  }

  /** Lines of the node's stderr naming `who` and `code`. */
  const linesAbout = (who: string, code: string) =>
    node.stderrLines.filter((line) => line.includes(who) && line.includes(code));

  /**
   * The raw peer was closed by the node, the node wrote exactly one line naming it and the reason,
   * and the honest peer is still heard.
   */
  async function expectDropped(raw: RawPeer, code: string, who = raw.addr): Promise<number> {
    const closedAt = await raw.closed();
    await node.waitForStderr((line) => line.includes(who) && line.includes(code), 3_000);
    await honestStillHeard(); // by now any later line about the same peer would have been written
    const lines = linesAbout(who, code);
    assert.equal(lines.length, 1, `exactly one log line names ${who} and ${code}; got:\n${lines.join('\n')}`);
    assert.doesNotMatch(node.stderr, /^\s+at /m, 'no stack trace');
    return closedAt;
  }

  it('drops a peer that sends garbage (an HTTP request)', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    // "GET " read as a length is about 1.2 GB, over the frame limit.
    await expectDropped(raw, 'ERR_FRAME_TOO_LARGE');
  });

  it('drops a peer that sends binary garbage inside a frame', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write(frame(Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7b, 0x22, 0xc3])));
    await expectDropped(raw, 'ERR_BAD_JSON');
  });

  it('drops a peer that announces a 4 GB frame at once, without waiting for its body', async () => {
    const raw = await openRaw(node.ready.port);
    const sentAt = Date.now();
    raw.socket.write(prefix(0xffff_fff0));
    const closedAt = await expectDropped(raw, 'ERR_FRAME_TOO_LARGE');
    // The hello timeout is 10 s: a close this soon is the length check, not a timer.
    assert.ok(closedAt - sentAt < 1_500, `closed ${closedAt - sentAt} ms after the length prefix`);
  });

  it('drops a peer that closes in the middle of a frame', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.end(Buffer.concat([prefix(100), Buffer.from('{"type":"hel')]));
    await expectDropped(raw, 'ERR_UNEXPECTED_EOF');
  });

  it('drops a peer that closes right after a length prefix', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.end(prefix(100));
    await expectDropped(raw, 'ERR_UNEXPECTED_EOF');
  });

  it('drops a peer that sends invalid JSON in a well-formed frame', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write(frame('{"type": hello, v: 1}'));
    await expectDropped(raw, 'ERR_BAD_JSON');
  });

  it('drops a peer that sends an unknown frame type after a valid hello', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write(Buffer.concat([frame(hello('rawunk01')), frame({ type: 'gossip', n: 1 })]));
    await expectDropped(raw, 'ERR_UNKNOWN_TYPE', 'rawunk01');
  });

  it('drops a peer whose hello has another protocol version', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write(frame(hello('rawver02', { v: 2 })));
    await expectDropped(raw, 'ERR_PROTOCOL_VERSION');
    assert.equal(
      node.events.filter((e) => e.event === 'peer-up' && e.peer === 'rawver02').length,
      0,
      'never counted as a peer',
    );
  });

  it('drops a peer that sends a chat frame before its hello', async () => {
    const raw = await openRaw(node.ready.port);
    const chat = {
      type: 'chat',
      id: 'rawchat1',
      from: 'rawchat1',
      nick: 'raw',
      ts: Date.now(),
      seq: 1,
      text: 'hi',
    };
    raw.socket.write(frame(chat));
    await expectDropped(raw, 'ERR_EXPECTED_HELLO');
    assert.ok(
      !node.events.some((e) => e.event === 'message' && e.id === 'rawchat1'),
      'the chat is not delivered',
    );
  });

  it('buffers only what a peer sends of a 200 KB frame, and still serves the honest peer meanwhile', async () => {
    const raw = await openRaw(node.ready.port);
    const payload = paddedHello('rawbig01', 200 * 1024);
    raw.socket.write(prefix(payload.length));
    raw.socket.write(payload.subarray(0, 64 * 1024));
    await honestStillHeard();
    assert.equal(raw.isClosed(), false, 'an announced length under the limit is not refused');

    raw.socket.write(payload.subarray(64 * 1024));
    const up = await node.waitForPeerUp('rawbig01');
    assert.equal(up.nick, 'raw');
    raw.socket.end();
    await node.waitForPeerDown('rawbig01');
    await raw.closed();
    assert.deepEqual(linesAbout('rawbig01', 'ERR_'), [], 'a clean close is not an error');
    await honestStillHeard();
  });

  it('accepts a frame of exactly 256 KiB and refuses one byte more at once', async () => {
    const ok = await openRaw(node.ready.port);
    ok.socket.write(frame(paddedHello('rawmax01', LIMIT)));
    await node.waitForPeerUp('rawmax01');

    const over = await openRaw(node.ready.port);
    const sentAt = Date.now();
    over.socket.write(prefix(LIMIT + 1));
    const closedAt = await expectDropped(over, 'ERR_FRAME_TOO_LARGE');
    assert.ok(closedAt - sentAt < 1_500, `closed ${closedAt - sentAt} ms after the length prefix`);
    assert.equal(ok.isClosed(), false, 'the peer that kept to the limit stays');
    ok.socket.end();
    await node.waitForPeerDown('rawmax01');
  });
});
