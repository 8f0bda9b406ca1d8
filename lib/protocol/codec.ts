import { Buffer } from 'node:buffer';
import { ProtocolError } from './errors.js';

/** Bytes of the length prefix in front of every frame: an unsigned 32-bit big-endian integer. */
export const LENGTH_PREFIX_BYTES = 4;

/**
 * Default largest frame payload, 256 KiB. A chat line is a few hundred bytes and a peer list of
 * 64 entries a few KiB; the bound keeps what a hostile peer can make us buffer small.
 */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024;

/**
 * A Buffer seen with its per-encoding decoders, which `Buffer#toString(encoding, start, end)` calls
 * after its argument handling: that handling makes an `arguments` object and walks an encoding
 * switch on every call, in code V8 has not optimised (most of a burst), and a received chat frame
 * gives seven strings. Every Buffer has them (`base64urlSlice` since Node 15); @types/node does not
 * declare them, and spec/protocol/codec.spec.ts checks that they answer as `toString` does. The
 * range must lie within the buffer (they throw a RangeError otherwise): for ranges already checked.
 */
export type SlicingBuffer = Buffer & {
  latin1Slice(start: number, end: number): string;
  utf8Slice(start: number, end: number): string;
  hexSlice(start: number, end: number): string;
  base64urlSlice(start: number, end: number): string;
};

/**
 * A Buffer seen with its per-encoding writers, which `Buffer#write(string, offset, encoding)` calls
 * after its argument handling (as {@link SlicingBuffer} for reading). Each writes `string` at `offset`
 * (at most `length` bytes, by default the rest of the buffer; only whole characters) and returns the
 * bytes written. @types/node does not declare them; spec/protocol/codec.spec.ts checks that they
 * answer as `write` does. For offsets already checked: one outside the buffer throws a RangeError.
 */
export type WritingBuffer = Buffer & {
  utf8Write(string: string, offset: number, length?: number): number;
  latin1Write(string: string, offset: number, length?: number): number;
};

/**
 * The bytes `[start, end)` of `bytes`, as a plain Uint8Array over the same memory. `Buffer#subarray`
 * makes a Buffer through Node's JavaScript (its offset checks and Buffer's own constructor, a class
 * extending Uint8Array), which per-message code runs unoptimised; this is the built-in constructor.
 * @throws {RangeError} for a range outside `bytes` (a view may not reach past it into the memory
 *   around it).
 */
export function bytesView(bytes: Uint8Array, start: number, end: number): Uint8Array {
  if (!(start >= 0 && start <= end && end <= bytes.length))
    throw new RangeError(`bytesView: [${start}, ${end}) is outside 0..${bytes.length}`);
  return new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start);
}

/**
 * Writes `value` (an integer in 0..2^32-1) as 4 big-endian bytes at `offset`: plain byte stores,
 * for per-message code (Buffer#writeUInt32BE checks its arguments through wrappers that allocate).
 */
export function putUint32(out: Uint8Array, offset: number, value: number): void {
  out[offset] = value >>> 24;
  out[offset + 1] = (value >>> 16) & 0xff;
  out[offset + 2] = (value >>> 8) & 0xff;
  out[offset + 3] = value & 0xff;
}

/** Reads 4 big-endian bytes at `offset` (all present) as an unsigned integer; byte loads, as {@link putUint32}. */
export function getUint32(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! * 0x100_0000 +
    ((bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!)
  );
}

/** Writes `value` (a safe non-negative integer) as 8 big-endian bytes at `offset`: two u32 halves, no BigInt. */
export function putUint64(out: Uint8Array, offset: number, value: number): void {
  putUint32(out, offset, Math.floor(value / 0x1_0000_0000));
  putUint32(out, offset + 4, value % 0x1_0000_0000);
}

/** Writes `value` (an integer in 0..65,535) as 2 big-endian bytes at `offset`, as {@link putUint32}. */
export function putUint16(out: Uint8Array, offset: number, value: number): void {
  out[offset] = value >>> 8;
  out[offset + 1] = value & 0xff;
}

/** Reads 2 big-endian bytes at `offset` (both present) as an unsigned integer, as {@link getUint32}. */
export function getUint16(bytes: Uint8Array, offset: number): number {
  return (bytes[offset]! << 8) | bytes[offset + 1]!;
}

/**
 * Writes one frame, its length prefix then `payload`, at `offset` in `out` (room checked by the
 * caller); returns the offset after it.
 */
export function putFrame(out: Uint8Array, offset: number, payload: Uint8Array): number {
  putUint32(out, offset, payload.length);
  out.set(payload, offset + LENGTH_PREFIX_BYTES);
  return offset + LENGTH_PREFIX_BYTES + payload.length;
}

/** Prepends the length prefix to one payload. */
export function encodeFrame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + payload.length);
  putFrame(out, 0, payload);
  return out;
}

/**
 * First byte of a pack: several frame payloads sealed as one encrypted message, each with its own
 * 4-byte length, so a burst costs one cipher call per write instead of one per frame. A frame's
 * plaintext is a frame, which never starts with this byte (JSON starts with `{`, a binary chat frame
 * with 0x01).
 */
export const PACK_MARKER = 0;

/** Bytes a pack adds in front of its frames (the marker). */
export const PACK_HEADER_BYTES = 1;

/** True when a decrypted plaintext is a pack rather than one frame. */
export function isPack(plaintext: Uint8Array): boolean {
  return plaintext.length > 0 && plaintext[0] === PACK_MARKER;
}

/**
 * Lays out frame payloads as a pack: the marker, then each payload after its length.
 * @throws {RangeError} for an empty payload or none at all (a bug of the caller).
 */
export function pack(payloads: readonly Uint8Array[]): Buffer {
  if (payloads.length === 0) throw new RangeError('pack: no frames');
  let size = PACK_HEADER_BYTES;
  for (const payload of payloads) {
    if (payload.length === 0) throw new RangeError('pack: empty frame');
    size += LENGTH_PREFIX_BYTES + payload.length;
  }
  const out = Buffer.allocUnsafe(size);
  out[0] = PACK_MARKER;
  let offset = PACK_HEADER_BYTES;
  for (const payload of payloads) offset = putFrame(out, offset, payload);
  return out;
}

/**
 * Splits a pack ({@link isPack}) into its frame payloads, views of `plaintext`, appended to `frames`.
 * @throws {ProtocolError} `ERR_BAD_PACK` for a pack with no frame, an empty frame, or a length that
 *   runs past its end; nothing is appended then.
 */
export function unpack(plaintext: Buffer, frames: Buffer[] = []): Buffer[] {
  const found = frames.length;
  let offset = PACK_HEADER_BYTES;
  while (offset < plaintext.length) {
    if (plaintext.length - offset < LENGTH_PREFIX_BYTES) {
      frames.length = found;
      throw new ProtocolError('ERR_BAD_PACK', `pack ends inside a length (at byte ${offset})`);
    }
    const length = getUint32(plaintext, offset);
    offset += LENGTH_PREFIX_BYTES;
    if (length === 0 || length > plaintext.length - offset) {
      frames.length = found;
      throw new ProtocolError(
        'ERR_BAD_PACK',
        length === 0
          ? `empty frame in a pack (at byte ${offset})`
          : `frame of ${length} bytes in a pack of ${plaintext.length} (at byte ${offset})`,
      );
    }
    frames.push(plaintext.subarray(offset, offset + length));
    offset += length;
  }
  if (frames.length === found) throw new ProtocolError('ERR_BAD_PACK', 'pack without a frame');
  return frames;
}

/** Chunks of one incomplete frame past which its bytes are gathered into one buffer. */
const MAX_CHUNKS = 16;

/**
 * Splits a byte stream into length-prefixed frame payloads.
 *
 * A state machine over the chunks it is given: the length is checked against `maxFrameBytes` the
 * moment its four bytes are in, so a peer that announces a huge frame is refused before a byte of it
 * is buffered. The buffered bytes never exceed `maxFrameBytes + 4` plus one chunk.
 */
export class FrameDecoder {
  private readonly chunks: Buffer[] = [];
  /** Bytes of `chunks[0]` already read: a position, so reading a frame makes no view of the rest. */
  private head = 0;
  private buffered = 0;
  /** Length of the frame being read, or -1 while its prefix is incomplete. */
  private expected = -1;
  /**
   * The body of the frame being read, gathered here once it spans {@link MAX_CHUNKS} chunks (a peer
   * sending a byte per segment would otherwise make this hold one Buffer object, ~200 bytes of heap,
   * per byte): grown by doubling up to `expected`, so memory stays within twice the bytes sent.
   */
  private partial: Buffer | undefined;
  private partialFilled = 0;

  private limit: number;

  /** @throws {RangeError} when `maxFrameBytes` is not a positive integer below 2^32. */
  constructor(maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {
    this.limit = FrameDecoder.check(maxFrameBytes);
  }

  /** Largest frame accepted now. */
  get maxFrameBytes(): number {
    return this.limit;
  }

  /**
   * Changes the largest frame accepted from the next length read on (small during a handshake, the
   * full size after it). @throws {RangeError} as the constructor.
   */
  set maxFrameBytes(value: number) {
    this.limit = FrameDecoder.check(value);
  }

  private static check(value: number): number {
    if (!Number.isInteger(value) || value < 1 || value > 0xffff_ffff) {
      throw new RangeError(`FrameDecoder: maxFrameBytes must be an integer in 1..2^32-1, got ${value}`);
    }
    return value;
  }

  /** Bytes received and not yet returned as a frame (a length prefix already read included). */
  get bufferedBytes(): number {
    return this.buffered + (this.expected >= 0 ? LENGTH_PREFIX_BYTES : 0);
  }

  /**
   * Takes the next chunk of the stream and returns every frame it completes (possibly none),
   * appended to `frames`. Every length is checked against the limit as it stands when this is
   * called; a reader that changes the limit between frames (the end of a handshake) uses
   * {@link append} and {@link nextFrame} instead.
   * @throws {ProtocolError} `ERR_FRAME_TOO_LARGE` or `ERR_EMPTY_FRAME`; the decoder is unusable after.
   *   The frames that came before the bad length in this chunk are in `frames` when it throws.
   */
  push(chunk: Buffer, frames: Buffer[] = []): Buffer[] {
    this.append(chunk);
    for (let frame = this.nextFrame(); frame !== undefined; frame = this.nextFrame()) frames.push(frame);
    return frames;
  }

  /**
   * Buffers the next chunk of the stream; {@link nextFrame} then takes its frames. Take them all
   * before the next chunk: the bound on buffered bytes holds only then.
   */
  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.buffered += chunk.length;
    if (this.partial === undefined) {
      this.chunks.push(chunk);
      return;
    }
    const take = Math.min(chunk.length, this.expected - this.partialFilled);
    this.reserve(this.partialFilled + take); // may replace this.partial
    this.partial.set(take === chunk.length ? chunk : chunk.subarray(0, take), this.partialFilled);
    this.partialFilled += take;
    if (take < chunk.length) this.chunks.push(chunk.subarray(take));
  }

  /** Grows {@link partial} to hold at least `n` bytes (at most `expected`), by doubling. */
  private reserve(n: number): void {
    const partial = this.partial!;
    if (partial.length >= n) return;
    const grown = Buffer.allocUnsafe(Math.min(this.expected, Math.max(n, partial.length * 2)));
    grown.set(partial.subarray(0, this.partialFilled));
    this.partial = grown;
  }

  /**
   * The next complete frame buffered, or `undefined` until more bytes come. Its length is checked
   * against the limit at this call, so a limit raised while the frame before it was handled (a
   * handshake completed by it) holds for it even when both came in one read.
   * @throws {ProtocolError} `ERR_FRAME_TOO_LARGE` or `ERR_EMPTY_FRAME`; the decoder is unusable after.
   */
  nextFrame(): Buffer | undefined {
    if (this.expected < 0) {
      if (this.buffered < LENGTH_PREFIX_BYTES) return undefined;
      const length = this.peekLength();
      if (length > this.maxFrameBytes) {
        throw new ProtocolError(
          'ERR_FRAME_TOO_LARGE',
          `frame of ${length} bytes announced, the limit is ${this.maxFrameBytes}`,
        );
      }
      if (length === 0) throw new ProtocolError('ERR_EMPTY_FRAME', 'empty frame');
      this.skip(LENGTH_PREFIX_BYTES);
      this.expected = length;
    }
    if (this.partial !== undefined) {
      if (this.partialFilled < this.expected) return undefined;
      const frame =
        this.partial.length === this.expected ? this.partial : this.partial.subarray(0, this.expected);
      this.partial = undefined;
      this.partialFilled = 0;
      this.buffered -= this.expected;
      this.expected = -1;
      return frame;
    }
    if (this.buffered < this.expected) {
      if (this.chunks.length >= MAX_CHUNKS) this.gather();
      return undefined;
    }
    const frame = this.consume(this.expected);
    this.expected = -1;
    return frame;
  }

  /**
   * Moves the buffered bytes of the incomplete frame being read into {@link partial} (a copy: they
   * lie in {@link MAX_CHUNKS} chunks), which {@link reserve} grows as the rest comes.
   */
  private gather(): void {
    const n = this.buffered; // all of them belong to this frame (fewer than `expected`)
    this.partial = this.consume(n);
    this.partialFilled = n;
    this.buffered = n; // still buffered, in `partial` now
  }

  /** The length prefix at the read position (4 bytes are buffered). */
  private peekLength(): number {
    let first = this.chunks[0]!;
    let at = this.head;
    if (first.length - at < LENGTH_PREFIX_BYTES) {
      first = this.flatten();
      at = 0;
    }
    return getUint32(first, at);
  }

  /** Joins the buffered chunks into one (rare: only when a prefix straddles chunks). */
  private flatten(): Buffer {
    const first = this.chunks[0]!;
    const all =
      this.chunks.length === 1
        ? first.subarray(this.head)
        : Buffer.concat([first.subarray(this.head), ...this.chunks.slice(1)], this.buffered);
    this.chunks.length = 0;
    this.chunks.push(all);
    this.head = 0;
    return all;
  }

  /** Drops the next `n` buffered bytes (n <= buffered). */
  private skip(n: number): void {
    this.buffered -= n;
    while (n > 0) {
      const left = this.chunks[0]!.length - this.head;
      if (left > n) {
        this.head += n;
        return;
      }
      this.chunks.shift();
      this.head = 0;
      n -= left;
    }
  }

  /** Removes and returns the next `n` buffered bytes (n <= buffered): a view where they lie in one chunk. */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    const left = first.length - this.head;
    if (left >= n) {
      const out = this.head === 0 && left === n ? first : first.subarray(this.head, this.head + n);
      if (left === n) {
        this.chunks.shift();
        this.head = 0;
      } else this.head += n;
      return out;
    }
    // Walked by index and dropped with one splice: a shift() per chunk moves the whole array each
    // time, quadratic in the chunks of a frame a peer sends a byte per segment.
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const chunk = this.chunks[used]!;
      const take = Math.min(chunk.length - this.head, n - filled);
      out.set(chunk.subarray(this.head, this.head + take), filled);
      filled += take;
      if (this.head + take === chunk.length) {
        used++;
        this.head = 0;
      } else this.head += take;
    }
    this.chunks.splice(0, used);
    return out;
  }
}
