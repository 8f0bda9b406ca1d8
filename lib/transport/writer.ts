import { Buffer } from 'node:buffer';
import type { Socket } from 'node:net';
import type { Observer } from 'rxjs';
import {
  LENGTH_PREFIX_BYTES,
  PACK_HEADER_BYTES,
  PACK_MARKER,
  putFrame,
  putUint32,
} from '../protocol/codec.js';
import { ProtocolError } from '../protocol/errors.js';

/** Options of a {@link PeerWriter}. */
export interface WriterOptions {
  /**
   * Most bytes queued for one peer (our outbox plus the socket's own buffer). Default 8 MiB: about
   * 40,000 chat messages, far beyond any burst a healthy peer lags behind by; past it the peer is a
   * slow reader and is disconnected rather than buffered without end.
   */
  readonly maxOutboxBytes?: number;
  /**
   * Longest wait for `'drain'` while bytes are queued. Default 30 s: a live peer drains far sooner;
   * one that does not has stopped reading.
   */
  readonly drainTimeoutMs?: number;
  /**
   * Bytes queued in one turn past which they are written at once instead of at the end of the turn.
   * Default 32 KiB (about 70 chat frames): a turn that produces much (a paste signed batch by batch,
   * a 64 KiB read relayed) sends its start while it works on the rest, so the peer works on it too
   * instead of waiting for the whole turn; one `write()` per 32 KiB costs little.
   */
  readonly flushBytes?: number;
}

export const WRITER_DEFAULTS = {
  maxOutboxBytes: 8 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  flushBytes: 32 * 1024,
} as const;

/**
 * `options` with the defaults filled in, checked (a node checks its writer options once, at
 * creation, rather than at its first connection).
 * @throws {RangeError} for a `maxOutboxBytes` that is not a positive integer, a `flushBytes` that is
 *   not a positive number, or a `drainTimeoutMs` that is not one up to 2^31-1 (setTimeout's limit).
 */
export function writerSettings(options: WriterOptions = {}): Required<WriterOptions> {
  // `??`, not a spread: an option given as undefined (from JavaScript) takes its default too.
  const maxOutboxBytes = options.maxOutboxBytes ?? WRITER_DEFAULTS.maxOutboxBytes;
  const drainTimeoutMs = options.drainTimeoutMs ?? WRITER_DEFAULTS.drainTimeoutMs;
  const flushBytes = options.flushBytes ?? WRITER_DEFAULTS.flushBytes;
  if (!Number.isInteger(maxOutboxBytes) || maxOutboxBytes < 1) {
    throw new RangeError(`writer options: maxOutboxBytes must be a positive integer, got ${maxOutboxBytes}`);
  }
  if (!(flushBytes > 0))
    throw new RangeError(`writer options: flushBytes must be positive, got ${flushBytes}`);
  // setTimeout fires at once for a delay over 2^31-1 ms.
  if (!(drainTimeoutMs > 0 && drainTimeoutMs <= 0x7fff_ffff)) {
    throw new RangeError(`writer options: drainTimeoutMs must be in (0, 2^31-1], got ${drainTimeoutMs}`);
  }
  return { maxOutboxBytes, drainTimeoutMs, flushBytes };
}

/** Encrypts frames for one link, in the order they are given (the nonce counts them). */
export interface Sealer {
  /** Bytes a sealed frame has more than its plaintext (the cipher's tag). */
  readonly overhead: number;
  /**
   * Seals the next message into `out`, exactly `plaintext.length + overhead` bytes. `plaintext` may
   * be the start of `out` (sealed in place).
   */
  sealInto(out: Uint8Array, plaintext: Uint8Array): void;
  /**
   * Largest plaintext of a pack (see `pack` in lib/protocol/codec.ts): when set, frames queued
   * together for this sealer go as packs of up to this many bytes, each sealed as one message. Unset
   * or under two frames' worth (or not a finite number), or an `overhead` under 5 bytes: each frame
   * is sealed alone. Read at every flush, so it may be set once the peer has said it reads packs.
   */
  readonly packBytes?: number;
}

/**
 * A frame payload given to a {@link PeerWriter}: bytes sent as they are (a handshake message), or a
 * plaintext the writer seals as it copies it into the bytes it sends.
 */
export type OutboundFrame = Uint8Array | SealedFrame;

/** A plaintext to seal with `sealer` when it is written. */
export interface SealedFrame {
  readonly plaintext: Uint8Array;
  readonly sealer: Sealer;
}

/**
 * The actor that owns one socket's write side. Frame payloads are given to it as an `Observer`
 * (`next`); it adds the length prefix, batches everything given in one turn of the event loop into
 * one `write()` (one per `flushBytes` within a turn that gives more), and honours backpressure:
 * while `write()` has returned false it queues until `'drain'`. A {@link SealedFrame} is encrypted
 * straight into that batch, in the order given, so a message costs no buffer of its own per link;
 * with a sealer's `packBytes`, the sealed frames queued together go as packs, one cipher call each.
 *
 * When the queued bytes pass `maxOutboxBytes`, or `'drain'` does not come within `drainTimeoutMs`,
 * it calls `onFault` with an `ERR_OUTBOX_OVERFLOW` error and drops its queue; the owner then closes
 * the connection. `complete()` flushes and ends the socket; `error()` destroys it.
 */
export class PeerWriter implements Observer<OutboundFrame> {
  private pending: OutboundFrame[] = [];
  private pendingBytes = 0;
  private scheduled = false;
  private waitingForDrain = false;
  private drainTimer: NodeJS.Timeout | undefined;
  private done = false;
  private readonly maxOutboxBytes: number;
  private readonly drainTimeoutMs: number;
  private readonly flushBytes: number;

  constructor(
    private readonly socket: Socket,
    private readonly onFault: (err: ProtocolError) => void,
    options: WriterOptions = {},
  ) {
    const settings = writerSettings(options);
    this.maxOutboxBytes = settings.maxOutboxBytes;
    this.drainTimeoutMs = settings.drainTimeoutMs;
    this.flushBytes = settings.flushBytes;
    socket.on('drain', this.onDrain);
  }

  /** Bytes waiting: in this writer's queue and in the socket's buffer. */
  get outboxBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  /** Queues one frame payload. Ignored after `complete()`, `error()` or a fault. */
  next(payload: OutboundFrame): void {
    if (this.done) return;
    this.pending.push(payload);
    this.pendingBytes += LENGTH_PREFIX_BYTES + frameLength(payload);
    if (this.outboxBytes > this.maxOutboxBytes) {
      this.fault(`outbox over ${this.maxOutboxBytes} bytes: the peer reads too slowly`);
      return;
    }
    if (this.waitingForDrain) return;
    if (this.pendingBytes >= this.flushBytes) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flush);
    }
  }

  /** Flushes what is queued, then ends the socket's write side. */
  complete(): void {
    if (this.done) return;
    this.done = true;
    this.waitingForDrain = false; // the socket buffers the rest; end() flushes it
    clearTimeout(this.drainTimer); // flush may set another; release clears that one
    this.flush();
    this.release();
    if (!this.socket.destroyed) this.socket.end();
  }

  /** Drops the queue and destroys the socket. */
  error(_err?: unknown): void {
    this.done = true;
    this.drop();
    this.socket.destroy();
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    if (this.pendingBytes === 0 || this.waitingForDrain || this.socket.destroyed) return;
    const batch = Buffer.allocUnsafe(this.pendingBytes);
    const frames = this.pending;
    // Taken off the queue before they are sealed: a sealer that throws (a session out of nonces
    // after 2^53 frames, or a bug) cannot leave frames behind to be sealed again with later nonces.
    this.pending = [];
    this.pendingBytes = 0;
    let offset = 0;
    // Plain byte stores, TypedArray#set and a plain Uint8Array view: Buffer's writeUInt32BE, copy
    // and subarray are layers of checks in JavaScript, run for every frame, and a burst runs them
    // before V8 has optimised any of it.
    for (let i = 0; i < frames.length;) {
      const payload = frames[i]!;
      if (payload instanceof Uint8Array) {
        offset = putFrame(batch, offset, payload);
        i++;
        continue;
      }
      const { sealer } = payload;
      const end = packEnd(frames, i, sealer);
      if (end - i < 2) {
        const length = payload.plaintext.length + sealer.overhead;
        putUint32(batch, offset, length);
        offset += LENGTH_PREFIX_BYTES;
        sealer.sealInto(view(batch, offset, length), payload.plaintext);
        offset += length;
        i++;
        continue;
      }
      // A pack: its frames laid out in the batch, then sealed where they lie.
      const start = offset + LENGTH_PREFIX_BYTES;
      let at = start;
      batch[at++] = PACK_MARKER;
      for (; i < end; i++) at = putFrame(batch, at, (frames[i] as SealedFrame).plaintext);
      putUint32(batch, offset, at - start + sealer.overhead);
      sealer.sealInto(view(batch, start, at - start + sealer.overhead), view(batch, start, at - start));
      offset = at + sealer.overhead;
    }
    // Packs take less room than the frames sealed alone that `pendingBytes` counted.
    if (!this.socket.write(offset === batch.length ? batch : batch.subarray(0, offset))) {
      this.waitingForDrain = true;
      this.drainTimer = setTimeout(
        () => this.fault(`no drain for ${this.drainTimeoutMs} ms: the peer stopped reading`),
        this.drainTimeoutMs,
      );
      this.drainTimer.unref();
    }
  };

  private readonly onDrain = (): void => {
    this.waitingForDrain = false;
    clearTimeout(this.drainTimer);
    this.flush();
  };

  private fault(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.drop();
    this.onFault(new ProtocolError('ERR_OUTBOX_OVERFLOW', reason));
  }

  private drop(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.release();
  }

  private release(): void {
    clearTimeout(this.drainTimer);
    this.socket.off('drain', this.onDrain);
  }
}

/** A plain Uint8Array view of `length` bytes of `batch` at `offset` (no Buffer#subarray checks). */
function view(batch: Buffer, offset: number, length: number): Uint8Array {
  return new Uint8Array(batch.buffer, batch.byteOffset + offset, length);
}

/**
 * The end of the pack that starts at `frames[start]`: the frames after it sealed by the same sealer,
 * as many as fit in its `packBytes` (at least the first one).
 */
function packEnd(frames: readonly OutboundFrame[], start: number, sealer: Sealer): number {
  // Under 5 bytes of overhead, a pack would take more room than its frames sealed alone (the batch
  // is allocated for those).
  if (sealer.overhead < PACK_HEADER_BYTES + LENGTH_PREFIX_BYTES) return start + 1;
  const limit = sealer.packBytes ?? 0;
  if (!Number.isFinite(limit) || limit <= 0) return start + 1;
  let size = PACK_HEADER_BYTES;
  let end = start;
  while (end < frames.length) {
    const frame = frames[end]!;
    if (frame instanceof Uint8Array || frame.sealer !== sealer) break;
    size += LENGTH_PREFIX_BYTES + frame.plaintext.length;
    if (size > limit && end > start) break;
    end++;
  }
  return end;
}

/** Bytes of a frame's payload as it is sent (sealed: with the cipher's tag). */
function frameLength(payload: OutboundFrame): number {
  return payload instanceof Uint8Array ? payload.length : payload.plaintext.length + payload.sealer.overhead;
}
