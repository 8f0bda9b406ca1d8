import type { Socket } from 'node:net';
import { defer, Observable, type Subscriber, type Subscription } from 'rxjs';
import { formatAddress, normalizeHost } from '../protocol/address.js';
import { FrameDecoder, isPack, unpack } from '../protocol/codec.js';
import { ProtocolError } from '../protocol/errors.js';
import {
  binaryChatLayout,
  chatIdOf,
  isBinaryChat,
  parseFrame,
  serializeFrame,
  type Frame,
  type HelloFrame,
  type SyncFrame,
} from '../protocol/frames.js';
import type { Decoded } from '../operators/decode.js';
import type { PeerRef } from '../operators/types.js';
import { fromSocket } from '../transport/from-socket.js';
import { PeerWriter, type OutboundFrame, type Sealer, type WriterOptions } from '../transport/writer.js';
import { TAG_BYTES } from '../security/cipher.js';
import { TokenBucket, type RateOptions } from '../transport/token-bucket.js';
import { Multicast } from '../util/multicast.js';
import type { Identity } from '../security/identity.js';
import type { StoredMessage } from '../store/message-store.js';
import {
  createHandshake,
  MAX_HANDSHAKE_MESSAGE_BYTES,
  type Handshake,
  type SecureSession,
} from '../security/noise.js';

/** What a connection needs to authenticate and encrypt: who we are, and the network key if any. */
export interface LinkSecurity {
  readonly identity: Identity;
  readonly networkKey: Uint8Array | undefined;
}

/** What a {@link Connection} is made of, besides its socket and direction. */
export interface ConnectionOptions {
  /** Largest frame accepted from the peer once authenticated (plaintext bytes). */
  readonly maxFrameBytes: number;
  readonly writer: WriterOptions;
  /** Frames per second the peer may send once authenticated; over it, reading pauses. */
  readonly frameRate: RateOptions;
  /** Sync requests per second the peer may have answered; over it, its latest waits (see `takeSync`). */
  readonly syncRate: RateOptions;
  /** Called when the writer gives up on the peer (outbox overflow, no drain). */
  readonly onWriteFault: (conn: Connection, err: ProtocolError) => void;
  readonly security: LinkSecurity;
  /** The address this node dialled, for outbound connections. */
  readonly dialed?: string | undefined;
  /**
   * True for a decrypted chat payload the node already has (a copy of a message it holds), asked
   * with the payload's id ({@link chatIdOf}): dropped before it is parsed. Default: none is.
   */
  readonly isKnown?: (id: string, payload: Buffer) => boolean;
  /**
   * Asked once the handshake proved the peer's identity, before anything queued is sent: a `bye`
   * reason to send instead of the queued frames (the hello), then close; undefined to go on.
   * Default: never refuses.
   */
  readonly refuse?: (remoteId: string) => string | undefined;
}

let nextConnectionNumber = 1;

/** The last binary chat frame converted to JSON, and its JSON: a relay sends one frame to several peers. */
let lastBinary: Buffer | undefined;
let lastJson: Buffer | undefined;

/** A binary chat frame as JSON (for a peer that does not read binary frames). */
function asJson(payload: Buffer): Buffer {
  if (payload !== lastBinary || lastJson === undefined) {
    lastJson = serializeFrame(parseFrame(payload));
    lastBinary = payload;
  }
  return lastJson;
}

/** How many of the frames written last a connection remembers, to tell what is still in flight. */
export const SENT_MEMORY = 16_384;

/**
 * Largest pack (plaintext bytes) this node seals and reads: about 90 chat messages, one cipher call
 * instead of 90, and what a peer can make it take in at once no more than a socket read.
 */
export const PACK_BYTES = 64 * 1024;

/** A ping that asks whether a connection still works (see {@link Connection.probes}). */
export interface Probe {
  /** The ping's nonce: random, so no other pong is taken for its answer. */
  readonly n: number;
  answered: boolean;
  /** The peer's other connection, which takes this one's place if this one does not answer. */
  readonly candidate: Connection;
  /** Decides what to keep; run once the connection answered, closed, or the time is up. */
  readonly settle: () => void;
}

/** A link's {@link Sealer}: its session's cipher, packing once the peer has said it reads packs. */
interface LinkSealer extends Sealer {
  packBytes: number;
  /** Largest plaintext of one sealed message. */
  readonly maxBytes: number;
}

/**
 * One TCP connection, from accept or dial to close. Owns its socket: the read side as `frames$`, the
 * write side through a {@link PeerWriter} fed by the `outbox` subject.
 *
 * Every connection starts with a Noise handshake (XX, or XXpsk0 with a network key; see
 * lib/security/noise.ts), each message one length-prefixed frame. After it every frame is encrypted
 * and authenticated; frames sent before it completes wait in a queue.
 */
export class Connection {
  /** A number for logs, unique in this process. */
  readonly number = nextConnectionNumber++;
  /** Decoded frames; completes or errors when the connection ends. Subscribe once. */
  readonly frames$: Observable<Decoded>;
  /** Host of the remote end, as the socket sees it (IPv4-mapped IPv6 unwrapped). */
  readonly remoteHost: string;
  /** Host of our end of the socket: the address the remote side reaches us at. */
  readonly localHost: string;
  /** Largest pack read from the peer (its frame limit, at most {@link PACK_BYTES}): say so in the hello. */
  readonly packLimit: number;
  /** The peer's hello, once received ({@link greet}). */
  get hello(): HelloFrame | undefined {
    return this.greeting;
  }
  private greeting: HelloFrame | undefined;
  /** When the last frame arrived (ms, `Date.now`); set on every frame, dropped copies included. */
  lastSeen = Date.now();
  /** Set when this node decided to close it, so the reason is logged once. */
  closing = false;
  /** Why it was closed, when this node knows (a protocol error, a timeout, a socket error). */
  closeReason: string | undefined;
  /** The reason was logged already (one line per dropped peer). */
  reasonLogged = false;
  /** Invalid messages this peer relayed. */
  strikes = 0;
  /**
   * Pings sent to learn whether this connection still works, while the same peer connected again
   * (the node's `probeThenRetire`): answered by a pong with the ping's nonce; settled when it closes.
   */
  readonly probes: Probe[] = [];
  /** The peer refused this connection (`bye full`): a failed dial, not a lost link. */
  refused = false;
  /** The peer said `bye duplicate` on it: it keeps another connection to us, never this one. */
  retiredByPeer = false;
  /**
   * Its close is the peer's end, not a link's: the peer shut down, or misbehaved. No other
   * connection of the peer takes its place then (see the node's onClosed).
   */
  endsPeer = false;
  /** A pending request to the peer for messages this node lacks (see the node's rate limits). */
  resyncTimer: NodeJS.Timeout | undefined;
  /**
   * What this node is sending the peer in answer to its sync, and how far it got: one backlog at a
   * time, a newer sync's joined to what the peer still lacks of an older one's (see the node's resync).
   */
  resync: { readonly backlog: readonly StoredMessage[]; next: number; ready: boolean } | undefined;
  /**
   * The next turn of the node's resync pump for this connection, when one is scheduled: at the next
   * turn of the event loop, or (`resyncWait`) a little later while the peer drains the last batch.
   * Cleared by {@link destroy}: no turn outlives the connection.
   */
  resyncTurn: NodeJS.Immediate | undefined;
  resyncWait: NodeJS.Timeout | undefined;
  /** When this node last answered the peer's anti-entropy sync with its own (ms): once a period at most. */
  lastEntropyAnswer = 0;
  /** The authenticated session, once the handshake completed. */
  session: SecureSession | undefined;
  /** Encrypted frames read on this connection (a sync tells the peer: {@link inFlight}). */
  rxFrames = 0;
  /** Encrypted frames written on this connection. */
  private txFrames = 0;
  /** Encrypted frames written on this connection so far. */
  get framesSent(): number {
    return this.txFrames;
  }
  /** {@link framesSent} at the node's last upkeep tick: nothing sent since when they are equal. */
  sentAtUpkeep = 0;
  /**
   * The message ids of the last {@link SENT_MEMORY} frames written (undefined for other frames), frame
   * `i` at `i % SENT_MEMORY`. Ids, not payloads: a kept payload would keep its whole pool slab alive.
   */
  private readonly sent: (string | undefined)[] = [];
  private readonly handshake: Handshake;
  private decoder: FrameDecoder | undefined;
  /** The frame limit once the session exists: the largest plaintext plus the cipher's tag. */
  private readonly fullFrameBytes: number;
  /** Plaintext payloads queued until the session exists. */
  private queued: Buffer[] = [];
  private readonly outbox = new Multicast<OutboundFrame>();
  private readonly writer: PeerWriter;
  private readonly writerSubscription: Subscription;
  private readonly frameRate: TokenBucket;
  private resumeTimer: NodeJS.Timeout | undefined;
  private readonly syncRate: TokenBucket;
  /** The peer's latest sync over its rate, waiting for a token, and the timer that hands it on. */
  private pendingSync: SyncFrame | undefined;
  private syncTimer: NodeJS.Timeout | undefined;

  /** The address this node dialled, for outbound connections. */
  readonly dialed: string | undefined;
  private readonly isKnown: (id: string, payload: Buffer) => boolean;
  private readonly refuse: (remoteId: string) => string | undefined;

  constructor(
    readonly socket: Socket,
    /** True when this node dialled it. */
    readonly outbound: boolean,
    options: ConnectionOptions,
  ) {
    const { maxFrameBytes, security } = options;
    this.dialed = options.dialed;
    this.isKnown = options.isKnown ?? (() => false);
    this.refuse = options.refuse ?? (() => undefined);
    socket.setNoDelay(true);
    this.remoteHost = normalizeHost(socket.remoteAddress ?? 'unknown');
    this.localHost = normalizeHost(socket.localAddress ?? 'unknown');
    this.fullFrameBytes = maxFrameBytes + TAG_BYTES;
    this.packLimit = Math.min(maxFrameBytes, PACK_BYTES);
    this.frameRate = new TokenBucket(options.frameRate);
    this.syncRate = new TokenBucket(options.syncRate);
    this.handshake = createHandshake({
      initiator: outbound,
      identity: security.identity,
      maxMessageBytes: maxFrameBytes,
      ...(security.networkKey !== undefined ? { networkKey: security.networkKey } : {}),
    });
    this.frames$ = defer(() => {
      const first = this.handshake.start();
      if (first !== undefined) this.outbox.next(first);
      // Until the peer has authenticated, no frame may be larger than a handshake message.
      const decoder = new FrameDecoder(MAX_HANDSHAKE_MESSAGE_BYTES);
      this.decoder = decoder;
      const raw$ = fromSocket(socket, decoder);
      // One step per frame: decrypted, parsed (what the decode operator does) and passed on here,
      // instead of through decode() and a tap for the end, two more subscribers each frame passes
      // through, mostly before V8 has optimised any of them. A throw (a frame that does not parse)
      // errors the stream, as decode's would.
      return new Observable<Decoded>((subscriber) =>
        raw$.subscribe({
          next: (raw) => {
            // Destroyed while an earlier frame of the same read was handled (dropped by the node): the
            // rest of that read is moot, as the pack loop below already holds.
            if (this.socket.destroyed) return;
            try {
              this.open(raw, subscriber);
            } catch (err) {
              subscriber.error(err);
            }
          },
          error: (err: unknown) => subscriber.error(err),
          complete: () => {
            if (this.session === undefined) subscriber.error(this.handshake.closedError());
            else subscriber.complete();
          },
        }),
      );
    });
    this.writer = new PeerWriter(socket, (err) => options.onWriteFault(this, err), options.writer);
    // Ends with the outbox (complete/error below); the writer owns the socket's write side from here.
    this.writerSubscription = this.outbox.subscribe(this.writer);
  }

  /**
   * The peer as the pipeline names it ({@link PeerRef}), once its hello arrived. One object until
   * the peer's next peer list: frames keep the neighbours that were known when they arrived.
   */
  get peerRef(): PeerRef | undefined {
    if (this.ref === undefined && this.hello !== undefined) {
      const key = this.session?.remotePublicKey.toString('hex');
      this.ref = { id: this.hello.id, host: this.remoteHost, ...(key === undefined ? {} : { key }) };
      this.refs.add(this.ref);
    }
    return this.ref;
  }

  /** True when `ref` is one this connection handed out: a frame carrying it came in on this one. */
  delivered(ref: PeerRef): boolean {
    return this.refs.has(ref);
  }

  /**
   * Records the peer's hello. From here on, frames go to it as packs when it says it reads them
   * (its `pack`, up to {@link PACK_BYTES}).
   */
  greet(hello: HelloFrame): void {
    const sealer = this.sealer;
    // A hello is an encrypted frame: the session, and with it the sealer, exist.
    if (sealer === undefined) throw new Error('Connection.greet: a hello before the handshake ended');
    this.greeting = hello;
    if (hello.pack !== undefined) sealer.packBytes = Math.min(hello.pack, PACK_BYTES, sealer.maxBytes);
  }

  /** Records the peers this peer says it is connected to (its latest peer list). */
  noteNeighbours(ids: ReadonlySet<string>): void {
    const ref = this.peerRef;
    if (ref === undefined) return;
    this.ref = { ...ref, neighbours: ids };
    this.refs.add(this.ref);
  }

  private ref: PeerRef | undefined;
  /** Every {@link peerRef} this connection handed out (a new one at each peer list): {@link delivered}. */
  private readonly refs = new WeakSet<PeerRef>();

  /** The remote node's id, once its hello arrived. */
  get peerId(): string | undefined {
    return this.hello?.id;
  }

  /** `host:port` of the remote socket, as seen here. */
  get remoteSocketAddress(): string {
    return formatAddress({ host: this.remoteHost, port: this.socket.remotePort ?? 0 });
  }

  /** Where the remote node listens: its advertised address, or its socket host and hello port. */
  get listenAddress(): string | undefined {
    if (this.hello === undefined) return undefined;
    return this.hello.addr ?? formatAddress({ host: this.remoteHost, port: this.hello.port });
  }

  /** A name for logs: "peer 3fa9c1 (bob) at 127.0.0.1:8002", or the socket address before hello. */
  get label(): string {
    const where = this.listenAddress ?? this.remoteSocketAddress;
    if (this.hello !== undefined) return `peer ${this.hello.id.slice(0, 8)} (${this.hello.nick}) at ${where}`;
    // Between the handshake and the hello the id is proven already; the nick is not known yet.
    if (this.session !== undefined) return `peer ${this.session.remoteId.slice(0, 8)} at ${where}`;
    return `peer at ${where}`;
  }

  /** Bytes queued for this peer and not yet taken by the kernel. */
  get outboxBytes(): number {
    return this.writer.outboxBytes;
  }

  /** Queues a frame for sending. */
  send(frame: Frame): void {
    this.sendPayload(serializeFrame(frame));
  }

  /**
   * Queues a payload that is already serialised (a relayed message, with its id); encrypted for this
   * link. A chat frame in the binary encoding goes as JSON to a peer whose hello does not say it
   * reads those (an older node): the same message, whose signature checks out either way.
   * @returns false, queueing nothing, for a chat frame whose JSON is over the frame limit (JSON
   *   escapes control characters in six bytes each: a text of them can outgrow a small limit).
   */
  sendPayload(payload: Buffer, messageId?: string): boolean {
    if (isBinaryChat(payload) && this.hello?.binary !== true) {
      payload = asJson(payload);
      if (payload.length > this.fullFrameBytes - TAG_BYTES) return false;
    }
    if (this.sealer !== undefined) this.write(this.sealer, payload, messageId);
    else this.queued.push(payload);
    return true;
  }

  /**
   * The ids of the messages written on this connection after its first `rx` frames (as far as the
   * last {@link SENT_MEMORY} go): those the peer had not read when it said it had read `rx` frames
   * (TCP keeps them in order), so they are still on their way to it.
   */
  inFlight(rx: number): Set<string> {
    const flying = new Set<string>();
    for (let i = Math.max(rx, this.txFrames - SENT_MEMORY); i < this.txFrames; i++) {
      const id = this.sent[i % SENT_MEMORY];
      if (id !== undefined) flying.add(id);
    }
    return flying;
  }

  private write(sealer: LinkSealer, payload: Buffer, messageId?: string): void {
    if (payload.length > sealer.maxBytes) {
      throw new RangeError(`frame of ${payload.length} bytes, the limit is ${sealer.maxBytes}`); // a bug
    }
    this.sent[this.txFrames % SENT_MEMORY] = messageId;
    this.txFrames++;
    // Sealed by the writer as it copies the frame into its batch (in this order: the nonces count).
    this.outbox.next({ plaintext: payload, sealer });
  }

  /** Exists once the session does. */
  private sealer: LinkSealer | undefined;

  /**
   * A received frame: the next handshake message, or an encrypted frame (one frame or a pack) to
   * open; each payload inside that the node does not have goes to `out`.
   */
  private open(raw: Buffer, out: Subscriber<Decoded>): void {
    if (this.session !== undefined) {
      this.lastSeen = Date.now();
      // In place: the frame's bytes are this connection's own (a slice of what the socket read).
      const plaintext = this.session.decryptInPlace(raw);
      if (!isPack(plaintext)) {
        if (this.charge(1)) this.take(plaintext, out);
        return;
      }
      if (plaintext.length > this.packLimit) {
        throw new ProtocolError(
          'ERR_BAD_PACK',
          `pack of ${plaintext.length} bytes, this node said it reads ${this.packLimit}`,
        );
      }
      const payloads = unpack(plaintext);
      // Charged together: over the rate, the socket pauses after this pack either way.
      if (!this.charge(payloads.length)) return;
      // Indexed: for-of makes an iterator result per step in code V8 has not optimised yet.
      for (let i = 0; i < payloads.length; i++) {
        // Dropped on one of them (a fault of the peer, or its outbox full): the rest is moot.
        if (out.closed || this.socket.destroyed) break;
        this.take(payloads[i]!, out);
      }
      return;
    }
    const { reply, session } = this.handshake.receive(raw);
    if (reply !== undefined) this.outbox.next(reply);
    if (session !== undefined) {
      this.session = session;
      const sealer: LinkSealer = {
        overhead: TAG_BYTES,
        packBytes: 0,
        maxBytes: session.maxMessageBytes,
        sealInto: (sealed, plaintext) => session.encryptInto(sealed, plaintext),
      };
      this.sealer = sealer;
      if (this.decoder !== undefined) this.decoder.maxFrameBytes = this.fullFrameBytes;
      const refusal = this.refuse(session.remoteId);
      const queued = refusal === undefined ? this.queued : [serializeFrame({ type: 'bye', reason: refusal })];
      this.queued = [];
      for (const payload of queued) this.write(sealer, payload);
      if (refusal !== undefined) this.end();
    }
  }

  /** One decrypted frame (charged to the peer's rate already): counted, then parsed and passed on unless known. */
  private take(payload: Buffer, out: Subscriber<Decoded>): void {
    this.rxFrames++;
    // The id read once, for the check and the parse: ~3,300 instructions per message each time.
    const id = chatIdOf(payload);
    if (id !== undefined && this.isKnown(id, payload)) return;
    // And the layout of a binary chat frame, for the parse and the signature check (~3,900 each time).
    const layout = binaryChatLayout(payload);
    out.next({ frame: parseFrame(payload, id, layout), payload, layout });
  }

  /**
   * Charges `frames` frames to the peer's rate. Over it, the socket stops being read until the
   * bucket holds a token again: the kernel's buffers fill and TCP slows the peer down; nothing is
   * dropped. Once closing, reading never pauses (the peer's own close must be seen within end's
   * grace), so frames over the rate are dropped instead: false, and the caller hands them on to no one.
   */
  private charge(frames: number): boolean {
    if (this.frameRate.spend(frames) >= 0) return true;
    if (this.closing) return false;
    if (this.resumeTimer !== undefined) return true;
    this.socket.pause();
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      if (!this.socket.destroyed) this.socket.resume();
    }, this.frameRate.msUntil(1));
    this.resumeTimer.unref();
    return true;
  }

  /**
   * Hands the peer's `sync` to `answer` now when the peer is within its sync rate. Over it, the sync
   * waits for a token, merged with any that waited before (see mergeSyncs): each sync carries all of
   * the peer's marks, so the latest's tell best what it lacks, and the loosest filters of the merged
   * keep every request whole. A peer sending syncs faster than the rate then costs one answer per
   * token, not one per frame, and an honest one's request is answered late, never lost or narrowed.
   */
  takeSync(sync: SyncFrame, answer: (sync: SyncFrame) => void): void {
    if (this.syncTimer !== undefined) {
      this.pendingSync = mergeSyncs(this.pendingSync, sync);
      return;
    }
    if (this.syncRate.tryTake(1)) {
      answer(sync);
      return;
    }
    this.pendingSync = mergeSyncs(this.pendingSync, sync);
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      const latest = this.pendingSync;
      this.pendingSync = undefined;
      if (latest !== undefined && !this.closing) this.takeSync(latest, answer);
    }, this.syncRate.msUntil(1));
    this.syncTimer.unref();
  }

  /**
   * Flushes what is queued and ends the connection; destroys it if the peer does not close within
   * `graceMs`. Called again (a peer repeating its `bye`, the node shutting down), it only brings the
   * deadline forward when the new grace ends sooner: one timer and one 'close' listener in all.
   */
  end(graceMs = 2000): void {
    this.closing = true;
    const deadline = Date.now() + graceMs;
    if (this.endTimer === undefined) {
      // Read again if the rate limit paused it, or the peer's own close would go unseen.
      clearTimeout(this.resumeTimer);
      this.socket.resume();
      this.outbox.complete();
      this.socket.once('close', () => clearTimeout(this.endTimer));
    } else if (deadline >= this.endDeadline) return;
    clearTimeout(this.endTimer);
    this.endDeadline = deadline;
    this.endTimer = setTimeout(() => this.socket.destroy(), graceMs);
    this.endTimer.unref();
  }

  /** Destroys the socket if the peer has not closed it by {@link endDeadline} (see {@link end}). */
  private endTimer: NodeJS.Timeout | undefined;
  private endDeadline = Infinity;

  /** Drops what is queued and closes the socket now. */
  destroy(): void {
    this.closing = true;
    clearTimeout(this.resumeTimer);
    clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    clearImmediate(this.resyncTurn);
    this.resyncTurn = undefined;
    clearTimeout(this.resyncWait);
    this.resyncWait = undefined;
    clearTimeout(this.syncTimer);
    this.pendingSync = undefined;
    this.resync = undefined;
    this.outbox.error(new Error('connection destroyed'));
    this.writerSubscription.unsubscribe();
    this.socket.destroy();
  }
}

/**
 * Two syncs waiting for a token as one: the latest's marks and rx, with the loosest filters of the
 * two (an earlier one's request is not narrowed by a later one's: `busy` only when both had it, no
 * `max` or `since` when one had none), and a `minAgeMs` when either had one, so an anti-entropy
 * sync's ask-back is kept (0 when the other had none: it filters nothing out).
 */
function mergeSyncs(earlier: SyncFrame | undefined, latest: SyncFrame): SyncFrame {
  if (earlier === undefined) return latest;
  const { minAgeMs: _m, busy: _b, max: _x, since: _s, ...rest } = latest;
  const minAgeMs =
    earlier.minAgeMs === undefined && latest.minAgeMs === undefined
      ? undefined
      : Math.min(earlier.minAgeMs ?? 0, latest.minAgeMs ?? 0);
  const max =
    earlier.max === undefined || latest.max === undefined ? undefined : Math.max(earlier.max, latest.max);
  const since =
    earlier.since === undefined || latest.since === undefined
      ? undefined
      : Math.min(earlier.since, latest.since);
  return {
    ...rest,
    ...(minAgeMs === undefined ? {} : { minAgeMs }),
    ...(earlier.busy === true && latest.busy === true ? { busy: true } : {}),
    ...(max === undefined ? {} : { max }),
    ...(since === undefined ? {} : { since }),
  };
}
