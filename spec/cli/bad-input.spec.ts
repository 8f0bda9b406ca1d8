import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { serializeFrame, type Frame } from '../../lib/protocol/frames.js';
import { generateIdentity } from '../../lib/security/identity.js';
import { networkTag } from '../../lib/security/network-key.js';
import { HANDSHAKE_MESSAGE_BYTES } from '../../lib/security/noise.js';
import { signChat } from '../../lib/security/sign.js';
import { secureHandshake, type SecureLink, type SecureOptions } from '../helpers/nodes.js';
import { Procs, WAIT_MS, type Proc, type ReadyEvent } from '../helpers/procs.js';

/** The frame limit the node enforces (DEFAULT_MAX_FRAME_BYTES), written out as the README states it. */
const LIMIT = 256 * 1024;
/**
 * After the handshake every frame is a ciphertext: the plaintext and its 16-byte Poly1305 tag. The
 * limit holds for the plaintext, so the largest frame on the wire is LIMIT + 16 bytes.
 */
const TAG = 16;
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
  /** The plaintext bytes it writes go on the wire as they are (before or instead of a handshake). */
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
  socket.resume(); // read and discard what the node sends (a secure client reads it through its link)
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

/** A raw client that completed the Noise handshake: what it sends through `link` is encrypted. */
interface SecurePeer extends RawPeer {
  readonly link: SecureLink;
  /** Its node id, proven in the handshake. */
  readonly id: string;
  /** How the node names it in logs once its hello is in: the first 8 characters of its id. */
  readonly who: string;
  /** Frames the node sent it, decrypted. */
  readonly frames: Frame[];
}

/** Opens a raw client and runs the handshake as a real node would; the node's frames are decrypted. */
async function openSecure(port: number, options: SecureOptions = {}): Promise<SecurePeer> {
  const raw = await openRaw(port);
  const frames: Frame[] = [];
  const link = await secureHandshake(
    raw.socket,
    (payload) => frames.push(JSON.parse(payload.toString('utf8')) as Frame),
    options,
  );
  return { ...raw, link, id: link.identity.id, who: link.identity.id.slice(0, 8), frames };
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

  it('drops a peer that sends garbage instead of a handshake message', async () => {
    const raw = await openRaw(node.ready.port);
    raw.socket.write(frame(Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7b, 0x22, 0xc3])));
    await expectDropped(raw, 'ERR_HANDSHAKE');
  });

  it('drops a peer whose handshake messages are garbage of the right sizes', async () => {
    const raw = await openRaw(node.ready.port);
    // 32 random bytes pass for an ephemeral key: the node answers with its second message ...
    const answered = new Promise<void>((resolve) => raw.socket.once('data', () => resolve()));
    raw.socket.write(frame(randomBytes(HANDSHAKE_MESSAGE_BYTES.first)));
    await answered;
    // ... and a third message that does not decrypt fails the handshake.
    raw.socket.write(frame(randomBytes(HANDSHAKE_MESSAGE_BYTES.third)));
    await expectDropped(raw, 'ERR_HANDSHAKE');
  });

  it('drops a peer that sends binary garbage inside an encrypted frame', async () => {
    const raw = await openSecure(node.ready.port);
    raw.link.sendPayload(Buffer.from([0xff, 0xfe, 0x00, 0x01, 0x80, 0x7b, 0x22, 0xc3]));
    await expectDropped(raw, 'ERR_BAD_JSON');
  });

  it('drops a peer that sends a plaintext frame after the handshake', async () => {
    const raw = await openSecure(node.ready.port);
    raw.socket.write(frame(hello(raw.id)));
    await expectDropped(raw, 'ERR_DECRYPT');
    assert.equal(
      node.events.filter((e) => e.event === 'peer-up' && e.peer === raw.id).length,
      0,
      'never counted as a peer',
    );
  });

  it('drops a peer whose encrypted frame has a flipped bit, once it is up', async () => {
    const raw = await openSecure(node.ready.port);
    raw.link.send(hello(raw.id) as Frame);
    await node.waitForPeerUp(raw.id);
    const tampered = raw.link.seal(serializeFrame({ type: 'ping', n: 1 }));
    tampered[tampered.length - 20]! ^= 0x01; // a bit of the ciphertext, before its 16-byte tag
    raw.socket.write(tampered);
    await expectDropped(raw, 'ERR_DECRYPT', raw.who);
    const down = await node.waitForPeerDown(raw.id);
    assert.match(down.reason, /ERR_DECRYPT/);
    assert.equal(raw.frames.filter((f) => f.type === 'pong').length, 0, 'the tampered ping was not answered');
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
    const raw = await openSecure(node.ready.port);
    raw.link.sendPayload(Buffer.from('{"type": hello, v: 1}'));
    await expectDropped(raw, 'ERR_BAD_JSON');
  });

  it('drops a peer that sends an unknown frame type after a valid hello', async () => {
    const raw = await openSecure(node.ready.port);
    raw.link.send(hello(raw.id) as Frame);
    raw.link.sendPayload(Buffer.from(JSON.stringify({ type: 'gossip', n: 1 })));
    await expectDropped(raw, 'ERR_UNKNOWN_TYPE', raw.who);
  });

  it("shows the control characters of a peer's nick escaped in its log lines: no forged line, no terminal escape", async () => {
    const raw = await openSecure(node.ready.port);
    const nick = 'x\ninfo: peer up: forged\u001b[2J\u009b31m';
    raw.link.send(hello(raw.id, { nick }) as Frame);
    raw.link.sendPayload(Buffer.from(JSON.stringify({ type: 'gossip', n: 1 })));
    await expectDropped(raw, 'ERR_UNKNOWN_TYPE', raw.who);
    const [line] = linesAbout(raw.who, 'ERR_UNKNOWN_TYPE');
    assert.ok(line!.includes('(x\\x0ainfo: peer up: forged\\x1b[2J\\x9b31m)'), line);
    assert.ok(!node.stderrLines.some((l) => l.startsWith('info: peer up: forged')), 'no forged line');
    assert.ok(
      !node.stderr.includes('\u001b') && !node.stderr.includes('\u009b'),
      'no escape reaches the terminal',
    );
  });

  it('drops a peer whose hello has another protocol version', async () => {
    const raw = await openSecure(node.ready.port);
    raw.link.sendPayload(Buffer.from(JSON.stringify(hello(raw.id, { v: 2 }))));
    await expectDropped(raw, 'ERR_PROTOCOL_VERSION');
    assert.equal(
      node.events.filter((e) => e.event === 'peer-up' && e.peer === raw.id).length,
      0,
      'never counted as a peer',
    );
  });

  it('drops a peer that sends a chat frame before its hello', async () => {
    const identity = generateIdentity();
    const raw = await openSecure(node.ready.port, { identity });
    // A well-formed chat frame, signed by the peer for this (public) network: only its place is wrong.
    const fields = { id: 'rawchat1', nick: 'raw', ts: Date.now(), seq: 1, text: 'hi' };
    const chat: Frame = {
      type: 'chat',
      ...fields,
      from: identity.id,
      key: identity.publicKey.toString('hex'),
      sig: signChat(identity, fields, networkTag()).toString('base64url'),
    };
    raw.link.send(chat);
    await expectDropped(raw, 'ERR_EXPECTED_HELLO');
    assert.ok(
      !node.events.some((e) => e.event === 'message' && e.id === 'rawchat1'),
      'the chat is not delivered',
    );
  });

  it('buffers only what a peer sends of a 200 KB frame, and still serves the honest peer meanwhile', async () => {
    const raw = await openSecure(node.ready.port);
    const sealed = raw.link.seal(paddedHello(raw.id, 200 * 1024));
    assert.equal(sealed.length, 4 + 200 * 1024 + TAG);
    raw.socket.write(sealed.subarray(0, 4 + 64 * 1024));
    await honestStillHeard();
    assert.equal(
      raw.isClosed(),
      false,
      `an announced length under the limit is not refused; the node's last lines:\n${node.stderrLines.slice(-8).join('\n')}`,
    );

    raw.socket.write(sealed.subarray(4 + 64 * 1024));
    const up = await node.waitForPeerUp(raw.id);
    assert.equal(up.nick, 'raw');
    raw.socket.end();
    await node.waitForPeerDown(raw.id);
    await raw.closed();
    assert.deepEqual(linesAbout(raw.who, 'ERR_'), [], 'a clean close is not an error');
    await honestStillHeard();
  });

  it('refuses a frame one byte over the limit at once, before and after the handshake', async () => {
    const early = await openRaw(node.ready.port);
    let sentAt = Date.now();
    early.socket.write(prefix(LIMIT + TAG + 1));
    let closedAt = await expectDropped(early, 'ERR_FRAME_TOO_LARGE');
    assert.ok(closedAt - sentAt < 1_500, `closed ${closedAt - sentAt} ms after the length prefix`);

    const over = await openSecure(node.ready.port);
    over.link.send(hello(over.id) as Frame);
    await node.waitForPeerUp(over.id);
    sentAt = Date.now();
    over.socket.write(prefix(LIMIT + TAG + 1));
    closedAt = await expectDropped(over, 'ERR_FRAME_TOO_LARGE', over.who);
    assert.ok(closedAt - sentAt < 1_500, `closed ${closedAt - sentAt} ms after the length prefix`);
  });

  it('accepts an encrypted frame of exactly 256 KiB of plaintext (256 KiB + 16 bytes on the wire)', async () => {
    // The client may encrypt up to the limit; a session's default stops 16 bytes short of it.
    const ok = await openSecure(node.ready.port, { maxMessageBytes: LIMIT });
    const sealed = ok.link.seal(paddedHello(ok.id, LIMIT));
    assert.equal(sealed.length, 4 + LIMIT + TAG);
    ok.socket.write(sealed);
    // Fails fast, naming the node's reason, when the node closes the link instead.
    const refused = ok.closed(WAIT_MS).then(
      () => linesAbout(ok.addr, 'ERR_').join('\n') || 'closed without a log line',
      () => new Promise<never>(() => {}),
    );
    const outcome = await Promise.race([node.waitForPeerUp(ok.id).then(() => 'up'), refused]);
    assert.equal(outcome, 'up', 'the node refused a frame at the limit');
    await honestStillHeard();
    assert.equal(ok.isClosed(), false, 'the peer that kept to the limit stays');
    assert.deepEqual(linesAbout(ok.who, 'ERR_'), []);
    ok.socket.end();
    await node.waitForPeerDown(ok.id);
  });
});
