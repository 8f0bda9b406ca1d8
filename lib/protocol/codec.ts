import { ProtocolError } from './errors.js';

/** Bytes of the length prefix in front of every frame: an unsigned 32-bit big-endian integer. */
export const LENGTH_PREFIX_BYTES = 4;

/**
 * Default largest frame payload, 256 KiB. A chat line is a few hundred bytes and a peer list of
 * 64 entries a few KiB; the bound keeps what a hostile peer can make us buffer small.
 */
export const DEFAULT_MAX_FRAME_BYTES = 256 * 1024;

/** Prepends the length prefix to one payload. */
export function encodeFrame(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + payload.length);
  out.writeUInt32BE(payload.length, 0);
  payload.copy(out, LENGTH_PREFIX_BYTES);
  return out;
}

/**
 * Splits a byte stream into length-prefixed frame payloads.
 *
 * A state machine over the chunks it is given: the length is checked against `maxFrameBytes` the
 * moment its four bytes are in, so a peer that announces a huge frame is refused before a byte of it
 * is buffered. The buffered bytes never exceed `maxFrameBytes + 4` plus one chunk.
 */
export class FrameDecoder {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  /** Length of the frame being read, or -1 while its prefix is incomplete. */
  private expected = -1;

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
   * appended to `frames`.
   * @throws {ProtocolError} `ERR_FRAME_TOO_LARGE` or `ERR_EMPTY_FRAME`; the decoder is unusable after.
   *   The frames that came before the bad length in this chunk are in `frames` when it throws.
   */
  push(chunk: Buffer, frames: Buffer[] = []): Buffer[] {
    if (chunk.length === 0) return frames;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.expected < 0) {
        if (this.buffered < LENGTH_PREFIX_BYTES) break;
        const length = this.peekLength();
        if (length > this.maxFrameBytes) {
          throw new ProtocolError(
            'ERR_FRAME_TOO_LARGE',
            `frame of ${length} bytes announced, the limit is ${this.maxFrameBytes}`,
          );
        }
        if (length === 0) throw new ProtocolError('ERR_EMPTY_FRAME', 'empty frame');
        this.consume(LENGTH_PREFIX_BYTES);
        this.expected = length;
      }
      if (this.buffered < this.expected) break;
      frames.push(this.consume(this.expected));
      this.expected = -1;
    }
    return frames;
  }

  private peekLength(): number {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= LENGTH_PREFIX_BYTES) return first.readUInt32BE(0);
    return this.flatten().readUInt32BE(0);
  }

  /** Joins the buffered chunks into one (rare: only when a prefix straddles chunks). */
  private flatten(): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks.length = 0;
    this.chunks.push(all);
    return all;
  }

  /** Removes and returns the first `n` buffered bytes (n <= buffered). */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const head = this.chunks[0]!;
      const take = Math.min(head.length, n - filled);
      head.copy(out, filled, 0, take);
      filled += take;
      if (take === head.length) this.chunks.shift();
      else this.chunks[0] = head.subarray(take);
    }
    return out;
  }
}
