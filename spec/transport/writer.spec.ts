import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FrameDecoder, isPack, LENGTH_PREFIX_BYTES, unpack } from '../../lib/protocol/codec.js';
import { ProtocolError } from '../../lib/protocol/errors.js';
import { fromSocket } from '../../lib/transport/from-socket.js';
import {
  PeerWriter,
  WRITER_DEFAULTS,
  writerSettings,
  type Sealer,
  type WriterOptions,
} from '../../lib/transport/writer.js';
import { closed, nextTurn, record, socketPair, waitFor } from '../helpers/nodes.js';

/** A payload of `size` bytes that carries its index `i` in its first four bytes. */
function numbered(i: number, size: number): Buffer {
  const payload = Buffer.alloc(size, i % 251);
  payload.writeUInt32BE(i, 0);
  return payload;
}

const indexOf = (payload: Buffer): number => payload.readUInt32BE(0);

/** A frame for the packing specs: `{` (as a JSON frame starts; a pack starts with 0), then its index. */
function braced(i: number, size: number): Buffer {
  const payload = Buffer.alloc(Math.max(size, 5), 0x20);
  payload[0] = 0x7b;
  payload.writeUInt32BE(i, 1);
  return payload;
}

/** The index of a {@link braced} frame. */
const bracedIndex = (payload: Buffer): number => payload.readUInt32BE(1);
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** Counts the `write()` calls made on `socket`, passing each one on. */
function countWrites(socket: Socket): { readonly calls: number } {
  const counter = { calls: 0 };
  const write = socket.write.bind(socket);
  Object.assign(socket, {
    write: (chunk: Buffer): boolean => {
      counter.calls++;
      return write(chunk);
    },
  });
  return counter;
}

/**
 * Gives `writer` numbered payloads, one per turn of the event loop, until the socket refuses more
 * (`write()` returned false: the kernel's buffers are full because the reader paused). Returns how
 * many it gave. Bounded, so a socket that never pushes back fails the test instead of hanging it.
 */
async function fillUntilBlocked(writer: PeerWriter, socket: Socket, size: number, from = 0): Promise<number> {
  let i = from;
  while (!socket.writableNeedDrain) {
    if (i - from > 2000) throw new Error('the socket never pushed back');
    writer.next(numbered(i++, size));
    await nextTurn();
  }
  return i;
}

/**
 * A stand-in cipher that works in place, as the real one does: each byte XORed with `key`, then
 * `overhead` bytes of tag, each `key`. `open` checks the tag and undoes it.
 */
function xorSealer(
  packBytes?: number,
  key = 0x55,
  overhead = 16,
): Sealer & { calls: number; owns(sealed: Buffer): boolean; open(sealed: Buffer): Buffer } {
  const sealer = {
    overhead,
    calls: 0,
    ...(packBytes !== undefined ? { packBytes } : {}),
    sealInto(out: Uint8Array, plaintext: Uint8Array): void {
      assert.equal(out.length, plaintext.length + overhead, 'exactly the room the sealed message takes');
      sealer.calls++;
      for (let i = 0; i < plaintext.length; i++) out[i] = plaintext[i]! ^ key;
      out.fill(key, plaintext.length);
    },
    owns: (sealed: Buffer): boolean =>
      sealed.length >= overhead && sealed.subarray(sealed.length - overhead).every((b) => b === key),
    open(sealed: Buffer): Buffer {
      assert.ok(sealer.owns(sealed), 'sealed by this sealer');
      return Buffer.from(sealed.subarray(0, sealed.length - overhead).map((b) => b ^ key));
    },
  };
  return sealer;
}

/**
 * A socket that only collects what is written to it (never full, never closed): for properties that
 * run a writer many times within one test.
 */
function collectingSocket(): { socket: Socket; written: Buffer[] } {
  const written: Buffer[] = [];
  const fake = {
    writableLength: 0,
    destroyed: false,
    write: (chunk: Buffer): boolean => written.push(Buffer.from(chunk)) > 0,
    on: () => fake,
    off: () => fake,
    end: () => fake,
  };
  // Only the members PeerWriter touches while it writes (no drain, end or destroy here).
  return { socket: fake as unknown as Socket, written };
}

const MIB = 1024 * 1024;
/** A reader that takes the 1 MiB payloads these specs fill sockets with. */
const bigFrames = (): FrameDecoder => new FrameDecoder(2 * MIB);

describe('PeerWriter', () => {
  it('batches the payloads given in one tick into one write, decoded in order at the other end', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const writes = countWrites(client);
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    for (const text of ['one', 'two', 'three', 'four']) writer.next(Buffer.from(text));
    assert.equal(writes.calls, 0, 'nothing is written before the tick ends');
    await waitFor(() => got.values.length === 4, 'four payloads');
    assert.equal(writes.calls, 1);
    assert.deepEqual(
      got.values.map((b) => b.toString()),
      ['one', 'two', 'three', 'four'],
    );
    writer.next(Buffer.from('five'));
    await waitFor(() => got.values.length === 5, 'a fifth payload');
    assert.equal(writes.calls, 2, 'a later tick is a later write');
  });

  it('writes as soon as flushBytes are queued in one turn, then the rest at its end, all in order', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const writes = countWrites(client);
    // 100-byte payloads are 104 bytes with their prefix: the third passes 300 bytes.
    const writer = new PeerWriter(client, (err) => assert.fail(err), { flushBytes: 300 });
    for (const i of range(2)) writer.next(numbered(i, 100));
    assert.equal(writes.calls, 0, 'under flushBytes: nothing written yet');
    writer.next(numbered(2, 100));
    assert.equal(writes.calls, 1, 'flushBytes reached: written at once, within the turn');
    for (const i of range(7)) writer.next(numbered(3 + i, 100));
    assert.equal(writes.calls, 3, 'and again at every further 300 bytes');
    await waitFor(() => got.values.length === 10, 'ten payloads');
    assert.equal(writes.calls, 4, 'the last one at the end of the turn');
    assert.deepEqual(got.values.map(indexOf), range(10));
  });

  it('seals frames as it writes them, in the order given, with raw frames between them (alone: an overhead under 5 bytes never packs)', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    // A stand-in cipher whose output shows the order of its calls: a counter byte, the plaintext
    // with every byte raised by one, and a 2-byte tag.
    let calls = 0;
    const sealer: Sealer = {
      overhead: 3,
      packBytes: 64 * 1024,
      sealInto: (out, plaintext) => {
        assert.equal(out.length, plaintext.length + 3, 'exactly the room the sealed frame takes');
        out[0] = calls++;
        for (let i = 0; i < plaintext.length; i++) out[i + 1] = plaintext[i]! + 1;
        out[plaintext.length + 1] = 0xee;
        out[plaintext.length + 2] = 0xff;
      },
    };
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    writer.next(Buffer.from('raw'));
    writer.next({ plaintext: Buffer.from('abc'), sealer });
    writer.next({ plaintext: Buffer.from('xy'), sealer });
    assert.equal(calls, 0, 'sealed when written, at the end of the tick');
    assert.equal(writer.outboxBytes, 3 * LENGTH_PREFIX_BYTES + 3 + 6 + 5, 'counted as sealed');
    writer.next(Buffer.from('raw2'));
    await waitFor(() => got.values.length === 4, 'four frames');
    assert.deepEqual(
      got.values.map((b) => [...b]),
      [
        [...Buffer.from('raw')],
        [0, ...Buffer.from('bcd'), 0xee, 0xff],
        [1, ...Buffer.from('yz'), 0xee, 0xff],
        [...Buffer.from('raw2')],
      ],
    );
  });

  it('seals frames queued together as packs of at most packBytes, one sealing each, in order', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const sealer = xorSealer(1 + 3 * (LENGTH_PREFIX_BYTES + 10)); // three frames of 10 bytes
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    writer.next(Buffer.from('raw'));
    for (const i of range(4)) writer.next({ plaintext: braced(i, 10), sealer });
    writer.next({ plaintext: braced(4, 50), sealer }); // larger than a pack: sealed alone
    for (const i of range(3)) writer.next({ plaintext: braced(5 + i, 10), sealer });
    writer.next(Buffer.from('raw2'));
    writer.next({ plaintext: braced(8, 10), sealer });
    const counted = writer.outboxBytes;
    await waitFor(() => got.values.length === 7, 'seven frames on the wire');
    assert.equal(sealer.calls, 5);

    const [first, ...rest] = got.values;
    assert.equal(first?.toString(), 'raw');
    assert.equal(rest[4]?.toString(), 'raw2');
    const opened = [0, 1, 2, 3, 5].map((i) => sealer.open(rest[i]!));
    assert.deepEqual(
      opened.map((p) => (isPack(p) ? unpack(p).map(bracedIndex) : bracedIndex(p))),
      // The fourth frame does not fit with the first three, nor with the large one after it.
      [[0, 1, 2], 3, 4, [5, 6, 7], 8],
    );
    // Counted as if each were sealed alone (an upper bound); a pack of three takes 63 bytes, not 90.
    assert.equal(counted, 7 + 4 * 30 + 70 + 3 * 30 + 8 + 30);
    const onWire = got.values.reduce((sum, frame) => sum + LENGTH_PREFIX_BYTES + frame.length, 0);
    assert.equal(onWire, 7 + 63 + 30 + 70 + 63 + 8 + 30);
  });

  it('seals each frame alone for a packBytes that is not a positive finite number', () => {
    for (const packBytes of [Number.NaN, Number.POSITIVE_INFINITY, -1, 0]) {
      const { socket, written } = collectingSocket();
      const sealer = xorSealer(packBytes);
      const writer = new PeerWriter(socket, (err) => assert.fail(err));
      for (const i of range(3)) writer.next({ plaintext: braced(i, 10), sealer });
      writer.complete();
      const sealed = new FrameDecoder().push(Buffer.concat(written));
      assert.deepEqual(
        sealed.map((frame) => bracedIndex(sealer.open(frame))),
        [0, 1, 2],
        String(packBytes),
      );
    }
  });

  it('packs any frames for any packBytes and sealers: the same frames come out, in order, in no more bytes than counted', () => {
    fc.assert(
      fc.property(
        // Per frame: 0 for a raw frame of 5 bytes, else its size and which of two sealers seals it.
        fc.array(fc.oneof(fc.constant(0), fc.tuple(fc.integer({ min: 1, max: 300 }), fc.boolean())), {
          maxLength: 40,
        }),
        fc.integer({ min: 0, max: 2000 }),
        fc.constantFrom(5, 16),
        (frames, packBytes, overhead) => {
          const { socket, written } = collectingSocket();
          // Two links' sealers in one writer (a test of the writer only: a real one has one).
          const sealers = [xorSealer(packBytes, 0x55, overhead), xorSealer(packBytes, 0x66, overhead)];
          const writer = new PeerWriter(socket, (err) => assert.fail(err));
          frames.forEach((frame, i) =>
            writer.next(
              frame === 0
                ? numbered(i, 5)
                : { plaintext: braced(i, frame[0]), sealer: sealers[frame[1] ? 1 : 0]! },
            ),
          );
          const counted = writer.outboxBytes;
          writer.complete(); // flushes now
          const wire = Buffer.concat(written);
          assert.ok(wire.length <= counted, `${wire.length} bytes written, ${counted} counted`);
          const out: number[] = [];
          for (const sealed of new FrameDecoder().push(wire)) {
            if (sealed.length === 5) {
              out.push(indexOf(sealed));
              continue;
            }
            const sealer = sealers.find((s) => s.owns(sealed))!;
            const plaintext = sealer.open(sealed);
            if (!isPack(plaintext)) out.push(bracedIndex(plaintext));
            else {
              assert.ok(plaintext.length <= packBytes, `a pack of ${plaintext.length} bytes`);
              const inside = unpack(plaintext);
              assert.ok(inside.length >= 2, 'a pack holds two frames at least');
              out.push(...inside.map(bracedIndex));
            }
          }
          assert.deepEqual(out, range(frames.length));
          // Each frame sealed alone but for packs: one sealing per sealed message.
          const sealedMessages = new FrameDecoder().push(wire).filter((f) => f.length !== 5).length;
          assert.equal(sealers[0]!.calls + sealers[1]!.calls, sealedMessages);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('counts queued bytes, prefixes included, in outboxBytes', async (t) => {
    const { client } = await socketPair(t);
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    writer.next(Buffer.alloc(10));
    writer.next(Buffer.alloc(20));
    assert.equal(writer.outboxBytes, 30 + 2 * LENGTH_PREFIX_BYTES);
    await waitFor(() => writer.outboxBytes === 0, 'the outbox to empty');
  });

  it('holds payloads back while the reader is paused, and sends them all in order after drain', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server, bigFrames()));
    server.pause();
    const faults: ProtocolError[] = [];
    const writer = new PeerWriter(client, (err) => faults.push(err), { maxOutboxBytes: 256 * MIB });
    const size = MIB;
    let n = await fillUntilBlocked(writer, client, size);
    const inSocket = client.writableLength;
    for (let k = 0; k < 5; k++) writer.next(numbered(n++, 1000));
    await nextTurn();
    await nextTurn();
    assert.equal(client.writableNeedDrain, true, 'still waiting for drain');
    assert.ok(client.writableLength <= inSocket, 'nothing more went to the socket');
    assert.equal(writer.outboxBytes - client.writableLength, 5 * (1000 + LENGTH_PREFIX_BYTES));
    server.resume();
    await waitFor(() => got.values.length === n, `${n} payloads`, 10_000);
    assert.deepEqual(got.values.map(indexOf), range(n));
    await waitFor(() => writer.outboxBytes === 0, 'the outbox to empty');
    assert.deepEqual(faults, []);
  });

  it('reports ERR_OUTBOX_OVERFLOW once, with its bytes bounded, when a slow reader passes maxOutboxBytes', async (t) => {
    const { client, server } = await socketPair(t);
    record(fromSocket(server, bigFrames()));
    server.pause();
    const faults: ProtocolError[] = [];
    const maxOutboxBytes = 512 * 1024;
    const size = 64 * 1024;
    const writer = new PeerWriter(client, (err) => faults.push(err), { maxOutboxBytes });
    let largest = 0;
    for (let i = 0; faults.length === 0; i++) {
      if (i > 5000) assert.fail('no fault while the reader stays paused');
      writer.next(numbered(i, size));
      largest = Math.max(largest, writer.outboxBytes);
      await nextTurn();
    }
    assert.equal(faults.length, 1);
    const [fault] = faults;
    assert.ok(fault instanceof ProtocolError);
    assert.equal(fault.code, 'ERR_OUTBOX_OVERFLOW');
    assert.ok(largest <= maxOutboxBytes + size + LENGTH_PREFIX_BYTES, `outbox reached ${largest} bytes`);
    const inSocket = client.writableLength;
    writer.next(numbered(0, size)); // ignored after a fault
    await nextTurn();
    assert.equal(writer.outboxBytes, inSocket, 'the queue was dropped and stays empty');
    assert.equal(faults.length, 1);
    assert.equal(client.listenerCount('drain'), 0);
  });

  it('reports ERR_OUTBOX_OVERFLOW when no drain comes within drainTimeoutMs', async (t) => {
    const { client, server } = await socketPair(t);
    record(fromSocket(server, bigFrames()));
    server.pause();
    let fault: ProtocolError | undefined;
    const writer = new PeerWriter(client, (err) => (fault = err), {
      maxOutboxBytes: 256 * MIB,
      drainTimeoutMs: 50,
    });
    await fillUntilBlocked(writer, client, MIB);
    await waitFor(() => fault !== undefined, 'a fault');
    assert.ok(fault instanceof ProtocolError);
    assert.equal(fault.code, 'ERR_OUTBOX_OVERFLOW');
    assert.match(fault.message, /drain/);
    assert.equal(client.destroyed, false, 'closing is left to the owner');
  });

  it('flushes what is queued and ends the socket on complete', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    writer.next(Buffer.from('a'));
    writer.next(Buffer.from('b'));
    writer.complete();
    writer.next(Buffer.from('after')); // ignored
    await waitFor(() => got.completed, 'the other end to see the end');
    assert.deepEqual(
      got.values.map((b) => b.toString()),
      ['a', 'b'],
    );
    assert.equal(got.error, undefined);
    assert.equal(client.listenerCount('drain'), 0);
  });

  it('flushes a queue held back by backpressure before ending, on complete', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server, bigFrames()));
    server.pause();
    const writer = new PeerWriter(client, (err) => assert.fail(err), { maxOutboxBytes: 256 * MIB });
    let n = await fillUntilBlocked(writer, client, MIB);
    for (let k = 0; k < 3; k++) writer.next(numbered(n++, 100));
    writer.complete();
    server.resume();
    await waitFor(() => got.completed, 'the other end to see the end', 10_000);
    assert.deepEqual(got.values.map(indexOf), range(n));
    assert.equal(got.error, undefined);
  });

  it('drops what is queued and destroys the socket on error', async (t) => {
    const { client, server } = await socketPair(t);
    const got = record(fromSocket(server));
    const writer = new PeerWriter(client, (err) => assert.fail(err));
    writer.next(Buffer.from('never sent'));
    writer.error(new Error('going away'));
    assert.equal(client.destroyed, true);
    await closed(server);
    assert.deepEqual(got.values, []);
    assert.equal(writer.outboxBytes, 0);
  });

  it('throws a RangeError at construction for a maxOutboxBytes that is not a positive integer', async (t) => {
    const { client } = await socketPair(t);
    for (const maxOutboxBytes of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new PeerWriter(client, () => {}, { maxOutboxBytes }), RangeError);
    }
  });

  it('takes an option given as undefined (from JavaScript) as its default', () => {
    // exactOptionalPropertyTypes forbids it in TypeScript; a JavaScript caller may still pass it.
    const given = { maxOutboxBytes: undefined, drainTimeoutMs: undefined, flushBytes: undefined };
    assert.deepEqual(writerSettings(given as unknown as WriterOptions), WRITER_DEFAULTS);
  });

  it('throws a RangeError at construction for a flushBytes that is not positive, or a drainTimeoutMs outside (0, 2^31-1]', async (t) => {
    const { client } = await socketPair(t);
    for (const bad of [0, -1, Number.NaN]) {
      assert.throws(() => new PeerWriter(client, () => {}, { flushBytes: bad }), RangeError);
      assert.throws(() => new PeerWriter(client, () => {}, { drainTimeoutMs: bad }), RangeError);
    }
    // setTimeout would fire at once for these: a writer would fault on its first backpressure.
    for (const drainTimeoutMs of [2 ** 31, Number.POSITIVE_INFINITY]) {
      assert.throws(() => new PeerWriter(client, () => {}, { drainTimeoutMs }), RangeError);
    }
  });
});
