import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, FrameDecoder, LENGTH_PREFIX_BYTES } from '../../lib/protocol/codec.js';
import { ProtocolError } from '../../lib/protocol/errors.js';
import { fromSocket } from '../../lib/transport/from-socket.js';
import { closed, nextTurn, record, socketPair, waitFor } from '../helpers/nodes.js';

/** A bare length prefix announcing `length` bytes. */
function prefix(length: number): Buffer {
  const out = Buffer.alloc(LENGTH_PREFIX_BYTES);
  out.writeUInt32BE(length, 0);
  return out;
}

const texts = (buffers: readonly Buffer[]): string[] => buffers.map((b) => b.toString('utf8'));

describe('fromSocket', () => {
  it('emits the payload of each frame the other end writes, in order', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.write(Buffer.concat([encodeFrame(Buffer.from('one')), encodeFrame(Buffer.from('two'))]));
    client.write(encodeFrame(Buffer.from('three')));
    await waitFor(() => got.values.length === 3, 'three payloads');
    assert.deepEqual(texts(got.values), ['one', 'two', 'three']);
    assert.equal(got.completed, false);
    assert.equal(got.error, undefined);
  });

  it('reassembles a frame whose prefix and body arrive in separate writes', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const frame = encodeFrame(Buffer.from('split across writes'));
    for (const piece of [frame.subarray(0, 2), frame.subarray(2, 7), frame.subarray(7)]) {
      client.write(piece);
      await nextTurn();
    }
    await waitFor(() => got.values.length === 1, 'one payload');
    assert.deepEqual(texts(got.values), ['split across writes']);
  });

  it('completes when the other end ends the stream at a frame boundary', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.end(encodeFrame(Buffer.from('last')));
    await waitFor(() => got.completed, 'completion');
    assert.deepEqual(texts(got.values), ['last']);
    assert.equal(got.error, undefined);
  });

  it('errors with ERR_UNEXPECTED_EOF when the other end ends in the middle of a frame', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.end(Buffer.concat([encodeFrame(Buffer.from('whole')), prefix(10), Buffer.from('half')]));
    await waitFor(() => got.error !== undefined, 'an error');
    assert.ok(got.error instanceof ProtocolError);
    assert.equal(got.error.code, 'ERR_UNEXPECTED_EOF');
    assert.deepEqual(texts(got.values), ['whole']);
    assert.equal(got.completed, false);
  });

  it('errors with ERR_UNEXPECTED_EOF when the stream ends inside a length prefix', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.end(prefix(10).subarray(0, 3));
    await waitFor(() => got.error !== undefined, 'an error');
    assert.ok(got.error instanceof ProtocolError);
    assert.equal(got.error.code, 'ERR_UNEXPECTED_EOF');
  });

  it('errors with ERR_UNEXPECTED_EOF when the stream ends right after a length prefix', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.end(Buffer.concat([encodeFrame(Buffer.from('whole')), prefix(10)]));
    await waitFor(() => got.error !== undefined || got.completed, 'the stream to end');
    assert.ok(got.error instanceof ProtocolError, 'a frame was announced and never came: not a clean end');
    assert.equal(got.error.code, 'ERR_UNEXPECTED_EOF');
    assert.deepEqual(texts(got.values), ['whole']);
  });

  it('errors with ERR_FRAME_TOO_LARGE as soon as an oversized length is announced', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server, new FrameDecoder(1024)));
    client.write(encodeFrame(Buffer.from('fine')));
    await waitFor(() => got.values.length === 1, 'the first payload');
    client.write(prefix(1025)); // no body follows: the prefix alone is refused
    await waitFor(() => got.error !== undefined, 'an error');
    assert.ok(got.error instanceof ProtocolError);
    assert.equal(got.error.code, 'ERR_FRAME_TOO_LARGE');
    assert.deepEqual(texts(got.values), ['fine']);
    await closed(server); // the error tears the subscription down, which destroys the socket
  });

  it('emits the frames that precede an oversized announcement in the same chunk', async (t) => {
    // The same bytes must give the same payloads however TCP happens to chunk them.
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server, new FrameDecoder(1024)));
    client.write(Buffer.concat([encodeFrame(Buffer.from('fine')), prefix(1025)]));
    await waitFor(() => got.error !== undefined, 'an error');
    assert.ok(got.error instanceof ProtocolError);
    assert.equal(got.error.code, 'ERR_FRAME_TOO_LARGE');
    assert.deepEqual(texts(got.values), ['fine']);
  });

  it('holds the frames after one to a limit its subscriber changed while handling it, in the same read', async (t) => {
    // The end of a handshake: its last message raises the limit, and the peer's first frame after
    // it (larger than a handshake message) may come in the same TCP segment.
    const { client, server } = await socketPair(t);
    const decoder = new FrameDecoder(16);
    const got: string[] = [];
    let error: unknown;
    fromSocket(server, decoder).subscribe({
      next: (payload) => {
        got.push(payload.toString('utf8'));
        if (payload.toString('utf8') === 'handshake done') decoder.maxFrameBytes = 1024;
      },
      error: (err: unknown) => (error = err),
    });
    client.write(
      Buffer.concat([encodeFrame(Buffer.from('handshake done')), encodeFrame(Buffer.alloc(500, 0x61))]),
    );
    await waitFor(() => got.length === 2 || error !== undefined, 'both frames or an error');
    assert.equal(error, undefined);
    assert.deepEqual(got, ['handshake done', 'a'.repeat(500)]);
  });

  it('errors with ERR_EMPTY_FRAME on a zero length', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    client.write(prefix(0));
    await waitFor(() => got.error !== undefined, 'an error');
    assert.ok(got.error instanceof ProtocolError);
    assert.equal(got.error.code, 'ERR_EMPTY_FRAME');
  });

  it('passes on a socket error such as ECONNRESET', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    // Closing with unread bytes in its receive buffer makes the kernel send a reset, not a FIN.
    await new Promise<void>((resolve) => server.write('never read', () => resolve()));
    await nextTurn();
    client.resetAndDestroy();
    await waitFor(() => got.error !== undefined || got.completed, 'the stream to end');
    assert.ok(got.error instanceof Error, `expected an error, got ${String(got.error)}`);
    assert.equal((got.error as NodeJS.ErrnoException).code, 'ECONNRESET');
  });

  it('destroys the socket when unsubscribed, and the other end sees it close', async (t) => {
    const { client, server } = await socketPair(t);
    const values: Buffer[] = [];
    const subscription = fromSocket(server).subscribe((payload) => values.push(payload));
    client.write(encodeFrame(Buffer.from('before')));
    await waitFor(() => values.length === 1, 'one payload');
    subscription.unsubscribe();
    assert.equal(server.destroyed, true);
    assert.equal(server.listenerCount('data'), 0);
    await closed(client);
    client.write(encodeFrame(Buffer.from('after')), () => {}); // must neither emit nor throw
    assert.deepEqual(texts(values), ['before']);
  });

  it('stops emitting at once when a subscriber unsubscribes in the middle of a chunk', async (t) => {
    const { client, server } = await socketPair(t);
    const values: Buffer[] = [];
    const subscription = fromSocket(server).subscribe((payload) => {
      values.push(payload);
      subscription.unsubscribe();
    });
    client.write(Buffer.concat(['a', 'b', 'c'].map((s) => encodeFrame(Buffer.from(s)))));
    await closed(server);
    assert.deepEqual(texts(values), ['a']);
  });
});
