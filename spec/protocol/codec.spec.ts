import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import {
  bytesView,
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  isPack,
  LENGTH_PREFIX_BYTES,
  pack,
  PACK_MARKER,
  unpack,
  type SlicingBuffer,
  type WritingBuffer,
} from '../../lib/protocol/codec.js';
import { ProtocolError, type ProtocolErrorCode } from '../../lib/protocol/errors.js';

// For the memory spec: gc() in a fresh context sees the flag (set before that context exists).
setFlagsFromString('--expose-gc');

const NUM_RUNS = 200;

/** A bare length prefix announcing `length` bytes. */
function prefix(length: number): Buffer {
  const out = Buffer.alloc(LENGTH_PREFIX_BYTES);
  out.writeUInt32BE(length, 0);
  return out;
}

/** Splits `stream` at the given cut points (taken modulo its length + 1); repeated cuts give empty chunks. */
function split(stream: Buffer, cuts: readonly number[]): Buffer[] {
  const points = cuts.map((cut) => cut % (stream.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of points) {
    chunks.push(Buffer.from(stream.subarray(start, point))); // a copy, as a socket hands out fresh buffers
    start = point;
  }
  chunks.push(Buffer.from(stream.subarray(start)));
  return chunks;
}

const hex = (buffers: readonly Buffer[]): string[] => buffers.map((b) => b.toString('hex'));

/** A validator for `assert.throws` that wants a ProtocolError with `code`. */
function protocolError(code: ProtocolErrorCode): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

/**
 * The most a decoder may hold between pushes: a push never returns with a complete frame, nor with a
 * complete but unchecked length prefix, still buffered. So at most a prefix and `maxFrameBytes - 1`
 * bytes of body remain, whatever the size of the chunk just pushed.
 */
const bufferBound = (maxFrameBytes: number): number => maxFrameBytes + LENGTH_PREFIX_BYTES - 1;

const payloadArb = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((bytes) => Buffer.from(bytes));
const cutsArb = fc.array(fc.nat(), { maxLength: 32 });
const uint32Arb = fc
  .tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }))
  .map(([high, low]) => high * 0x1_0000 + low);
const maxFrameBytesArb = fc.oneof(fc.integer({ min: 1, max: 64 }), fc.constant(DEFAULT_MAX_FRAME_BYTES));

/** What a hostile or broken peer may send: well-formed frames, loose bytes, and bare prefixes of any length. */
const hostileStreamArb = fc
  .array(
    fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 48 }).map((bytes) => encodeFrame(Buffer.from(bytes))),
      fc.uint8Array({ maxLength: 16 }).map((bytes) => Buffer.from(bytes)),
      fc.oneof(fc.integer({ min: 0, max: 70 }), uint32Arb).map(prefix),
    ),
    { maxLength: 12 },
  )
  .map((segments) => Buffer.concat(segments));

describe('SlicingBuffer', () => {
  it('answers as Buffer#toString for every range of any bytes, in each encoding the decoders use', () => {
    // Buffer's own per-encoding decoders are not in Node's documentation: this is what the frame
    // decoders rely on, checked on this Node.
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.nat(),
        fc.nat(),
        fc.boolean(),
        (raw, a, b, pooled) => {
          // A view at an offset (a socket read's frame) as well as a buffer of its own.
          const bytes = (
            pooled ? Buffer.concat([Buffer.alloc(7, 0xee), Buffer.from(raw)]).subarray(7) : Buffer.from(raw)
          ) as SlicingBuffer;
          const start = raw.length === 0 ? 0 : a % (raw.length + 1);
          const end = start + (raw.length === start ? 0 : b % (raw.length - start + 1));
          assert.equal(bytes.latin1Slice(start, end), bytes.toString('latin1', start, end));
          assert.equal(bytes.utf8Slice(start, end), bytes.toString('utf8', start, end));
          assert.equal(bytes.hexSlice(start, end), bytes.toString('hex', start, end));
          assert.equal(bytes.base64urlSlice(start, end), bytes.toString('base64url', start, end));
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('throws a RangeError for a range outside the buffer, rather than reading past it', () => {
    const bytes = Buffer.from('abcdef').subarray(1, 4) as SlicingBuffer;
    assert.throws(() => bytes.latin1Slice(0, 4), RangeError);
    assert.throws(() => bytes.hexSlice(2, 9), RangeError);
  });
});

describe('bytesView', () => {
  it('is the range of the bytes it is given, over the same memory, for every range inside them', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), fc.nat(), fc.nat(), (raw, a, b) => {
        const outer = Buffer.concat([Buffer.alloc(5, 0xee), Buffer.from(raw), Buffer.alloc(5, 0xee)]);
        const bytes = outer.subarray(5, 5 + raw.length);
        const start = a % (raw.length + 1);
        const end = start + (b % (raw.length - start + 1));
        const view = bytesView(bytes, start, end);
        assert.deepEqual(Buffer.from(view), bytes.subarray(start, end));
        assert.equal(view.buffer, bytes.buffer, 'a view, not a copy');
        assert.equal(view.byteOffset, bytes.byteOffset + start);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it('throws a RangeError for a range outside the bytes, though the memory around them is there', () => {
    const bytes = Buffer.alloc(16).subarray(4, 8);
    assert.throws(() => bytesView(bytes, 0, 5), RangeError);
    assert.throws(() => bytesView(bytes, -1, 2), RangeError);
    assert.throws(() => bytesView(bytes, 3, 2), RangeError);
    assert.equal(bytesView(bytes, 4, 4).length, 0);
  });
});

describe('WritingBuffer', () => {
  it('writes as Buffer#write does, at any offset, with the same count, in each encoding the writers use', () => {
    // Buffer's own per-encoding writers are not in Node's documentation: the --json console relies on them.
    fc.assert(
      fc.property(
        fc.string({
          unit: fc.oneof(
            fc.constantFrom('\ud800', '\udfff', '"', '\\'),
            fc.string({ unit: 'binary', maxLength: 1 }),
          ),
          maxLength: 60,
        }),
        fc.nat(64),
        fc.nat(200),
        (text, offset, size) => {
          const at = Math.min(offset, size);
          for (const encoding of ['utf8', 'latin1'] as const) {
            const ours = Buffer.alloc(size, 0xee) as WritingBuffer;
            const theirs = Buffer.alloc(size, 0xee);
            const written = encoding === 'utf8' ? ours.utf8Write(text, at) : ours.latin1Write(text, at);
            assert.equal(written, theirs.write(text, at, encoding), encoding);
            assert.deepEqual(ours, theirs, encoding);
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it('throws a RangeError for an offset outside the buffer, rather than writing past it', () => {
    const bytes = Buffer.alloc(8).subarray(2, 6) as WritingBuffer;
    assert.throws(() => bytes.utf8Write('x', 5), RangeError);
    assert.throws(() => bytes.latin1Write('x', 5), RangeError);
  });
});

describe('encodeFrame', () => {
  it('prepends the payload length as a 4-byte big-endian integer', () => {
    assert.deepEqual(encodeFrame(Buffer.from('abc')), Buffer.from([0, 0, 0, 3, 0x61, 0x62, 0x63]));
    assert.deepEqual(encodeFrame(Buffer.alloc(0x0102)).subarray(0, 4), Buffer.from([0, 0, 1, 2]));
  });
});

describe('FrameDecoder', () => {
  describe('constructor', () => {
    it('defaults maxFrameBytes to DEFAULT_MAX_FRAME_BYTES (256 KiB)', () => {
      assert.equal(DEFAULT_MAX_FRAME_BYTES, 256 * 1024);
      assert.equal(new FrameDecoder().maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
    });

    it('throws a RangeError for a maxFrameBytes that is not an integer in 1..2^32-1', () => {
      for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 32]) {
        assert.throws(() => new FrameDecoder(bad), RangeError, `maxFrameBytes ${bad}`);
      }
    });

    it('accepts the extreme limits 1 and 2^32-1', () => {
      assert.equal(new FrameDecoder(1).maxFrameBytes, 1);
      assert.equal(new FrameDecoder(2 ** 32 - 1).maxFrameBytes, 2 ** 32 - 1);
    });
  });

  describe('push', () => {
    it('returns nothing for an empty chunk and leaves the buffer alone', () => {
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(Buffer.alloc(0)), []);
      assert.equal(decoder.bufferedBytes, 0);
    });

    it('returns every frame a chunk completes, in order', () => {
      const decoder = new FrameDecoder();
      const chunk = Buffer.concat([encodeFrame(Buffer.from('one')), encodeFrame(Buffer.from('two'))]);
      assert.deepEqual(hex(decoder.push(chunk)), hex([Buffer.from('one'), Buffer.from('two')]));
      assert.equal(decoder.bufferedBytes, 0);
    });

    it('reassembles a frame sent one byte at a time, returning it on its last byte only', () => {
      const decoder = new FrameDecoder();
      const wire = encodeFrame(Buffer.from('hello'));
      for (let i = 0; i < wire.length - 1; i++) {
        assert.deepEqual(decoder.push(wire.subarray(i, i + 1)), [], `byte ${i}`);
      }
      assert.deepEqual(hex(decoder.push(wire.subarray(wire.length - 1))), hex([Buffer.from('hello')]));
      assert.equal(decoder.bufferedBytes, 0);
    });

    it('reads a length prefix that straddles chunks', () => {
      const decoder = new FrameDecoder();
      const wire = Buffer.concat([encodeFrame(Buffer.from('first')), encodeFrame(Buffer.from('second'))]);
      const secondPrefixAt = LENGTH_PREFIX_BYTES + 'first'.length;
      // first frame plus 1 prefix byte | 2 more prefix bytes | last prefix byte and the body
      const [cutA, cutB] = [secondPrefixAt + 1, secondPrefixAt + 3];
      assert.deepEqual(hex(decoder.push(wire.subarray(0, cutA))), hex([Buffer.from('first')]));
      assert.deepEqual(decoder.push(wire.subarray(cutA, cutB)), []);
      assert.deepEqual(hex(decoder.push(wire.subarray(cutB))), hex([Buffer.from('second')]));
      assert.equal(decoder.bufferedBytes, 0);
    });

    it('reads a length prefix split over four one-byte chunks followed by the body', () => {
      const decoder = new FrameDecoder();
      const wire = encodeFrame(Buffer.alloc(300, 7)); // a length whose prefix has two non-zero bytes
      for (let i = 0; i < LENGTH_PREFIX_BYTES; i++)
        assert.deepEqual(decoder.push(wire.subarray(i, i + 1)), []);
      assert.deepEqual(hex(decoder.push(wire.subarray(LENGTH_PREFIX_BYTES))), hex([Buffer.alloc(300, 7)]));
    });

    it('accepts a frame of exactly maxFrameBytes', () => {
      const decoder = new FrameDecoder(8);
      assert.deepEqual(hex(decoder.push(encodeFrame(Buffer.alloc(8, 1)))), hex([Buffer.alloc(8, 1)]));
    });

    it('refuses a frame one byte over maxFrameBytes with ERR_FRAME_TOO_LARGE', () => {
      const decoder = new FrameDecoder(8);
      assert.throws(() => decoder.push(encodeFrame(Buffer.alloc(9))), protocolError('ERR_FRAME_TOO_LARGE'));
    });

    it('refuses a zero-length frame with ERR_EMPTY_FRAME', () => {
      const decoder = new FrameDecoder();
      assert.throws(() => decoder.push(prefix(0)), protocolError('ERR_EMPTY_FRAME'));
    });

    it('refuses a 4 GiB announcement under the default limit from its prefix alone', () => {
      const decoder = new FrameDecoder();
      assert.throws(() => decoder.push(prefix(0xffff_ffff)), protocolError('ERR_FRAME_TOO_LARGE'));
    });

    it('checks each length with nextFrame() against the limit as it is then: raised after a frame, it holds for the next one of the same chunk', () => {
      // A handshake's last message and the first large frame after it, in one read.
      const decoder = new FrameDecoder(8);
      decoder.append(Buffer.concat([encodeFrame(Buffer.alloc(8, 1)), encodeFrame(Buffer.alloc(100, 2))]));
      assert.deepEqual(hex([decoder.nextFrame()!]), hex([Buffer.alloc(8, 1)]));
      decoder.maxFrameBytes = 100;
      assert.deepEqual(hex([decoder.nextFrame()!]), hex([Buffer.alloc(100, 2)]));
      assert.equal(decoder.nextFrame(), undefined, 'nothing more buffered');
      assert.equal(decoder.bufferedBytes, 0);
      // push() checks every length of its chunk against the limit of the moment it is called.
      const eager = new FrameDecoder(8);
      assert.throws(
        () => eager.push(Buffer.concat([encodeFrame(Buffer.alloc(8, 1)), encodeFrame(Buffer.alloc(100, 2))])),
        protocolError('ERR_FRAME_TOO_LARGE'),
      );
    });

    it('counts a bare length prefix as buffered, so an end of stream right after it is seen as mid-frame', () => {
      // fromSocket treats bufferedBytes === 0 at 'end' as a clean close.
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(prefix(10)), []);
      assert.equal(decoder.bufferedBytes, LENGTH_PREFIX_BYTES);
    });
  });

  describe('properties', () => {
    it('yields exactly the encoded payloads, in order, however the stream is chunked', () => {
      fc.assert(
        fc.property(fc.array(payloadArb, { maxLength: 16 }), cutsArb, (payloads, cuts) => {
          // The tightest limit that admits every payload, so frames of exactly the limit occur.
          const decoder = new FrameDecoder(Math.max(1, ...payloads.map((p) => p.length)));
          const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
          const received: Buffer[] = [];
          for (const chunk of split(stream, cuts)) received.push(...decoder.push(chunk));
          assert.deepEqual(hex(received), hex(payloads));
          assert.equal(decoder.bufferedBytes, 0);
        }),
        { numRuns: NUM_RUNS },
      );
    });

    it('yields the same payloads, and counts the same bufferedBytes, when each frame comes in many tiny chunks', () => {
      // Chunks of 1-5 bytes: a frame spans up to hundreds of them, so its bytes are gathered into
      // one buffer on the way (past 16 chunks), and chunks end inside frames and prefixes alike.
      const sizesArb = fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 64 });
      fc.assert(
        fc.property(fc.array(payloadArb, { minLength: 1, maxLength: 6 }), sizesArb, (payloads, sizes) => {
          const decoder = new FrameDecoder();
          const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
          const received: Buffer[] = [];
          let pending = 0;
          for (let at = 0, i = 0; at < stream.length; i++) {
            const chunk = Buffer.from(stream.subarray(at, at + sizes[i % sizes.length]!));
            at += chunk.length;
            pending += chunk.length;
            for (const frame of decoder.push(chunk)) {
              received.push(frame);
              pending -= LENGTH_PREFIX_BYTES + frame.length;
            }
            assert.equal(decoder.bufferedBytes, pending);
          }
          assert.deepEqual(hex(received), hex(payloads));
        }),
        { numRuns: NUM_RUNS },
      );
    });

    it('holds a frame sent a byte at a time in memory near its size, not an object per byte', () => {
      const gc = runInNewContext('gc') as () => void;
      const decoder = new FrameDecoder();
      const prefix = Buffer.alloc(LENGTH_PREFIX_BYTES);
      prefix.writeUInt32BE(200_000);
      decoder.push(prefix);
      gc();
      const before = process.memoryUsage().heapUsed;
      const bytes = 60_000;
      for (let i = 0; i < bytes; i++) assert.deepEqual(decoder.push(Buffer.from([i & 0xff])), []);
      gc();
      const perByte = (process.memoryUsage().heapUsed - before) / bytes;
      // A Buffer kept per byte cost ~200 bytes of heap each; gathered, the bytes are off the heap.
      assert.ok(perByte < 32, `${perByte.toFixed(0)} bytes of heap per byte buffered`);
      assert.equal(decoder.bufferedBytes, LENGTH_PREFIX_BYTES + bytes);
    });

    it('counts in bufferedBytes every byte received and not yet returned in a frame', () => {
      fc.assert(
        fc.property(fc.array(payloadArb, { maxLength: 8 }), cutsArb, (payloads, cuts) => {
          const decoder = new FrameDecoder();
          const stream = Buffer.concat(payloads.map((p) => encodeFrame(p)));
          let pending = 0;
          for (const chunk of split(stream, cuts)) {
            pending += chunk.length;
            for (const frame of decoder.push(chunk)) pending -= LENGTH_PREFIX_BYTES + frame.length;
            assert.equal(decoder.bufferedBytes, pending);
          }
        }),
        { numRuns: NUM_RUNS },
      );
    });

    it('gives only frames or a ProtocolError (ERR_FRAME_TOO_LARGE, ERR_EMPTY_FRAME) for any bytes in any chunks', () => {
      fc.assert(
        fc.property(
          maxFrameBytesArb,
          fc.oneof(
            hostileStreamArb,
            fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
          ),
          cutsArb,
          (maxFrameBytes, stream, cuts) => {
            const decoder = new FrameDecoder(maxFrameBytes);
            for (const chunk of split(stream, cuts)) {
              let frames: Buffer[];
              try {
                frames = decoder.push(chunk);
              } catch (err) {
                if (!(err instanceof ProtocolError)) throw err;
                assert.ok(
                  err.code === 'ERR_FRAME_TOO_LARGE' || err.code === 'ERR_EMPTY_FRAME',
                  `unexpected code ${err.code}`,
                );
                return; // the decoder is unusable after an error
              }
              for (const frame of frames) {
                assert.ok(
                  frame.length >= 1 && frame.length <= maxFrameBytes,
                  `frame of ${frame.length} bytes`,
                );
              }
            }
          },
        ),
        { numRuns: NUM_RUNS },
      );
    });

    it('never holds more than maxFrameBytes + 3 bytes after a push, whatever the chunk size', () => {
      fc.assert(
        fc.property(maxFrameBytesArb, hostileStreamArb, cutsArb, (maxFrameBytes, stream, cuts) => {
          const decoder = new FrameDecoder(maxFrameBytes);
          for (const chunk of split(stream, cuts)) {
            try {
              decoder.push(chunk);
            } catch (err) {
              if (err instanceof ProtocolError) return;
              throw err;
            }
            assert.ok(
              decoder.bufferedBytes <= bufferBound(maxFrameBytes),
              `${decoder.bufferedBytes} bytes buffered after a chunk of ${chunk.length}, limit ${maxFrameBytes}`,
            );
          }
        }),
        { numRuns: NUM_RUNS },
      );
    });

    it('refuses an oversize announcement when its 4th prefix byte arrives, before any body is sent', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 1 << 20 }),
          uint32Arb,
          fc.array(payloadArb, { maxLength: 4 }),
          cutsArb,
          fc.integer({ min: 0, max: LENGTH_PREFIX_BYTES - 1 }),
          (maxFrameBytes, excess, before, cuts, prefixSent) => {
            const announced = maxFrameBytes + 1 + (excess % (2 ** 32 - maxFrameBytes - 1));
            const legal = before.map((p) => p.subarray(0, maxFrameBytes));
            const head = prefix(announced);
            const decoder = new FrameDecoder(maxFrameBytes);
            const lead = Buffer.concat([...legal.map((p) => encodeFrame(p)), head.subarray(0, prefixSent)]);
            const received: Buffer[] = [];
            for (const chunk of split(lead, cuts)) received.push(...decoder.push(chunk));
            assert.deepEqual(hex(received), hex(legal));
            assert.ok(decoder.bufferedBytes < LENGTH_PREFIX_BYTES);
            assert.throws(
              () => decoder.push(head.subarray(prefixSent)),
              protocolError('ERR_FRAME_TOO_LARGE'),
            );
          },
        ),
        { numRuns: NUM_RUNS },
      );
    });

    it('buffers only the bytes actually sent, not the length a peer announces', () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 2, max: DEFAULT_MAX_FRAME_BYTES }),
          fc.uint8Array({ maxLength: 64 }),
          cutsArb,
          (announced, body, cuts) => {
            const sent = Buffer.from(body).subarray(0, announced - 1); // one byte short of a frame at most
            const decoder = new FrameDecoder();
            for (const chunk of split(Buffer.concat([prefix(announced), sent]), cuts)) {
              assert.deepEqual(decoder.push(chunk), []);
            }
            assert.ok(decoder.bufferedBytes <= LENGTH_PREFIX_BYTES + sent.length);
          },
        ),
        { numRuns: NUM_RUNS },
      );
    });
  });
});

describe('pack and unpack', () => {
  it('lays out a pack as the marker, then each payload after its 4-byte length', () => {
    const packed = pack([Buffer.from('ab'), Buffer.from('{c}')]);
    assert.deepEqual(
      packed,
      Buffer.from([PACK_MARKER, 0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 3, 0x7b, 0x63, 0x7d]),
    );
    assert.equal(isPack(packed), true);
    assert.deepEqual(hex(unpack(packed)), hex([Buffer.from('ab'), Buffer.from('{c}')]));
  });

  it('tells a pack from a JSON frame by its first byte', () => {
    assert.equal(isPack(Buffer.from('{"type":"ping","n":1}')), false);
    assert.equal(isPack(Buffer.alloc(0)), false);
    assert.equal(isPack(Buffer.from([PACK_MARKER])), true);
  });

  it('gives views of the pack, appended after what the array held', () => {
    const packed = pack([Buffer.from('xyz')]);
    const frames = unpack(packed, [Buffer.from('before')]);
    assert.equal(frames.length, 2);
    assert.equal(frames[1]!.buffer, packed.buffer, 'a view, not a copy');
  });

  it('refuses with ERR_BAD_PACK a pack with no frame, an empty frame, a cut length or a length past its end', () => {
    const cases = [
      Buffer.from([PACK_MARKER]),
      Buffer.from([PACK_MARKER, 0, 0, 0, 0]),
      Buffer.from([PACK_MARKER, 0, 0, 0, 1, 0x61, 0, 0]),
      Buffer.from([PACK_MARKER, 0, 0, 0, 3, 0x61, 0x62]),
      Buffer.from([PACK_MARKER, 0xff, 0xff, 0xff, 0xff, 0x61]),
    ];
    for (const bad of cases) {
      const frames: Buffer[] = [Buffer.from('kept')];
      assert.throws(() => unpack(bad, frames), protocolError('ERR_BAD_PACK'), bad.toString('hex'));
      assert.equal(frames.length, 1, 'nothing of a bad pack is appended');
    }
  });

  it('refuses to lay out no payload or an empty one (a bug of the caller)', () => {
    assert.throws(() => pack([]), RangeError);
    assert.throws(() => pack([Buffer.from('a'), Buffer.alloc(0)]), RangeError);
  });

  describe('properties', () => {
    it('unpack gives back exactly the payloads packed, in order', () => {
      fc.assert(
        fc.property(fc.array(payloadArb, { minLength: 1, maxLength: 20 }), (payloads) => {
          assert.deepEqual(hex(unpack(pack(payloads))), hex(payloads));
        }),
        { numRuns: NUM_RUNS },
      );
    });

    it('gives only frames that tile the pack, or ERR_BAD_PACK, for any bytes after the marker', () => {
      fc.assert(
        fc.property(hostileStreamArb, (body) => {
          const packed = Buffer.concat([Buffer.from([PACK_MARKER]), body]);
          let frames: Buffer[];
          try {
            frames = unpack(packed);
          } catch (err) {
            return protocolError('ERR_BAD_PACK')(err);
          }
          assert.ok(frames.length > 0);
          assert.deepEqual(pack(frames), packed, 'the frames and their lengths are the whole pack');
          return true;
        }),
        { numRuns: NUM_RUNS },
      );
    });
  });
});
