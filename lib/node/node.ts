import { Buffer } from 'node:buffer';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import {
  BehaviorSubject,
  defer,
  finalize,
  merge,
  mergeMap,
  Subject,
  tap,
  Subscription,
  Observable,
} from 'rxjs';
import { boundedLru } from '../util/lru.js';
import { Multicast, shareHot } from '../util/multicast.js';
import {
  AddressError,
  formatAddress,
  isLoopback,
  isUnspecified,
  normalizeHost,
  parseAddress,
  type Address,
} from '../protocol/address.js';
import { DEFAULT_MAX_FRAME_BYTES, type SlicingBuffer } from '../protocol/codec.js';
import { isPeerError, ProtocolError } from '../protocol/errors.js';
import {
  binaryChatBytes,
  MAX_NICK_LENGTH,
  MAX_PEERS_PER_LIST,
  MAX_TEXT_LENGTH,
  PATH_HASH_BYTES,
  PROTOCOL_VERSION,
  parseFrame,
  type ChatFrame,
  type Frame,
  type HelloFrame,
  type PeerEntry,
  type PeersFrame,
  type SyncFrame,
  MAX_SYNC_MARKS,
  MAX_SYNC_MIN_AGE_MS,
  MAX_SYNC_RANGES,
  type SyncMark,
} from '../protocol/frames.js';
import type { Decoded } from '../operators/decode.js';
import { dedupCheck } from '../operators/dedup.js';
import { filterMap } from '../operators/filter-map.js';
import { mergePeers } from '../operators/merge-peers.js';
import { lastRelayTargets, relay, type RelayView } from '../operators/relay.js';
import type { Inbound, PeerRef } from '../operators/types.js';
import { BACKOFF_DEFAULTS, backoffDelay, type BackoffOptions } from '../transport/backoff.js';
import { writerSettings, type WriterOptions } from '../transport/writer.js';
import { remember } from '../operators/remember.js';
import {
  heldFrame,
  HISTORY_DEFAULTS,
  MessageStore,
  MAX_HISTORY_MESSAGES,
  MAX_PAYLOAD_BYTES,
  MIN_HISTORY_AGE_MS,
  COMPACT_RETRY_MAX_MS,
  COMPACT_RETRY_MS,
  WRITE_RETRY_MS,
  type HeldFrame,
  type HistoryWindow,
} from '../store/message-store.js';
import { Connection, type Probe } from './connection.js';
import { lockDataDir } from './data-dir.js';
import type { LinkSecurity } from './connection.js';
import { SecurityError } from '../security/errors.js';
import { generateIdentity, loadOrCreateIdentity, type Identity } from '../security/identity.js';
import { randomBytes, randomUint32 } from '../security/bytes.js';
import { NETWORK_KEY_BYTES, networkTag } from '../security/network-key.js';
import { signedChats } from '../security/sign.js';
import { chatProblemChecker, signatureCheck, type ChatChecker } from '../operators/verify.js';
import { rateLimitCheck, spendRateStep } from '../operators/rate-limit.js';
import { checkRate, RateLimiter, type RateOptions } from '../transport/token-bucket.js';
import { silentLogger, type Logger } from './log.js';

/**
 * A chat message as the node delivers it: the fields of its {@link ChatFrame} that matter to a
 * reader (id, sender id, nickname, timestamp, sequence number, text), without the wire-only ones
 * (type, key, signature: checked before a message is delivered).
 */
export type ChatMessage = Pick<ChatFrame, 'id' | 'from' | 'nick' | 'ts' | 'seq' | 'text'>;

/** A connected peer. */
export interface PeerInfo {
  readonly id: string;
  readonly nick: string;
  /** `host:port` the peer listens on, as this node knows it. */
  readonly address: string;
  /** `out` when this node dialled it, `in` when it dialled this node. */
  readonly direction: 'in' | 'out';
}

/** Something that happened to the node's set of peers. */
export type NodeEvent =
  | { readonly type: 'peer-up'; readonly peer: PeerInfo }
  | { readonly type: 'peer-down'; readonly peer: PeerInfo; readonly reason: string };

/**
 * Timers of a node; every default carries its reason. Tests shorten them. Each is a whole number of
 * ms from 1 up to 2^31 - 1 (setTimeout's longest delay: a longer one would fire at once), or to the
 * lower bound its field gives (`antiEntropyMs`, `gapRepairMs`); `createNode` throws a RangeError for
 * any other. An undefined field takes its default.
 */
export interface NodeTiming {
  /** Time a new connection has to send its hello. Default 10 s: generous for a slow link, short for a squatter. */
  readonly helloTimeoutMs?: number;
  /**
   * Interval of the peer-table upkeep, which pings every peer not heard from for half of it and sends
   * a pong unasked to every peer sent nothing since the tick before (a link that carries traffic both
   * ways needs neither). Default 5 s.
   */
  readonly pingIntervalMs?: number;
  /** A peer silent this long (no frame at all, pongs included) is dead. Default 15 s: two or three missed pings. */
  readonly peerTimeoutMs?: number;
  /** Longest wait for a TCP connect. Default 5 s. */
  readonly connectTimeoutMs?: number;
  /**
   * Retry delays of dials. A link lost after it lasted `pingIntervalMs` is dialled again at the first
   * delay; a failed dial, a refusal or a shorter link (a node that says hello and hangs up) backs off.
   */
  readonly backoff?: BackoffOptions;
  /** Delay before telling peers that the peer set changed, so a burst of joins sends one list. Default 250 ms. */
  readonly peerListDelayMs?: number;
  /**
   * Delay before asking a peer again for messages dropped over their sender's rate. Default 5 s: the
   * sender's bucket has refilled by 5 x its rate by then, and a flooding sender's backlog is offered
   * at most once per 5 s.
   */
  readonly rateResyncDelayMs?: number;
  /**
   * Anti-entropy: once no new message has arrived (and no peer left) for this long, the node sends
   * its peers a sync, so that what a stale peer list or a lost frame left out is fetched; during a
   * long busy spell, every ten times this. Peers leave out what they took in during the last half of
   * it (still on its way). Default 2 s: a hole is filled about 2 s after the talk pauses; an idle
   * node sends nothing. At most 120,000: half of it goes out as a sync's `minAgeMs`, which peers
   * take up to a minute.
   */
  readonly antiEntropyMs?: number;
  /**
   * Gap repair: a message of a sender missing while later ones of it arrived (a relay that skipped
   * this node on a stale peer list or in a race, see `relayTargets`) is asked for once it has been
   * missing this long: from the peer that delivered the later one, then, a period on, from every
   * peer. Default 500 ms: longer than messages of one sender take to overtake each other on
   * different paths in a burst, and a hole is filled long before anti-entropy's pause (or, in a long
   * burst, its ten periods). A whole number of ms up to 60,000 (it goes out as a sync's `minAgeMs`):
   * `createNode` throws a RangeError for any other.
   */
  readonly gapRepairMs?: number;
  /**
   * A node named in peer lists is learned again this long after it was last learned at the same
   * address, so an address given up on (unreachable, or refusing as full, `learnedDialAttempts`
   * times) is tried once more when peers still name it. Default 10 min: a node that stays
   * unreachable costs its peers `learnedDialAttempts` dials per 10 min.
   */
  readonly relearnMs?: number;
}

/**
 * Abuse limits of a node; every default carries its reason. Over a limit the node sheds the
 * offender (a flooding peer is slowed, a flooding sender's excess dropped), not its honest peers.
 */
export interface NodeLimits {
  /**
   * Frames a peer may send per second, with a burst on top; over it the node stops reading that
   * peer's socket until the bucket refills (TCP flow control slows the peer; nothing is lost).
   * Default 10,000/s, burst 20,000: several times what a busy chat or a history resync needs, and a
   * fraction of what the node can decrypt and parse, so one peer cannot take the node's whole CPU.
   */
  readonly peerFrames?: RateOptions;
  /**
   * History requests (`sync` frames) per second a peer may have answered, with a burst on top. Each
   * answer walks this node's history window and may send the peer all of it; over the rate the
   * peer's requests wait for the rate merged into one (Connection#takeSync), so a peer that sends
   * syncs in a loop gets one answer per token instead of a copy of the history per 26-byte frame. Default 10/s, burst 20: several times what an honest peer asks (an anti-entropy sync and
   * its answer per 2 s period, a gap repair round per 500 ms, one after an over-rate episode). Peers
   * whose `gapRepairMs` or `antiEntropyMs` are far below the defaults ask more often: raise it for them.
   */
  readonly peerSyncs?: RateOptions;
  /**
   * Chat messages a sender (a signing key) may have accepted per second, with a burst on top; its
   * excess is dropped before the signature check (cheap) and not relayed, so a flood is cut at the
   * first hop instead of crossing the network, and the node asks the peer again 5 s later for what
   * it lacks (history resync), so an honest backlog is delayed, not lost. Only new, valid messages
   * are charged: a forger cannot spend an honest sender's budget, and copies relayed by several
   * peers count once. Default 500/s, burst 2,500: a pasted file of 2,500 lines passes at once, a
   * sustained flood is held to 500/s, which every node of a network can verify and relay with most
   * of its CPU to spare for the honest senders.
   */
  readonly senderMessages?: RateOptions;
  /**
   * Connection attempts in flight at once (TCP connect and handshake). Default 16: enough to reach
   * a full set of peers in one round, few enough that a peer list full of dead addresses cannot tie
   * up the node's sockets. Dials over the cap wait their turn.
   */
  readonly maxDials?: number;
  /**
   * Addresses learned from peer lists and inbound peers, kept for dialling. Default 256: many times
   * the target degree; the least recently learned idle one is forgotten when a new one comes, never
   * a proven one (this node dialled it and found a node there) for an unproven one, and what one
   * peer names (its lists, its own address in its hello) holds at most a quarter of the table.
   */
  readonly maxLearnedAddresses?: number;
}

export const LIMIT_DEFAULTS = {
  peerFrames: { perSecond: 10_000, burst: 20_000 },
  peerSyncs: { perSecond: 10, burst: 20 },
  senderMessages: { perSecond: 500, burst: 2_500 },
  maxDials: 16,
  maxLearnedAddresses: 256,
} as const;

/**
 * Smallest `maxFrameBytes` a node takes: 1 KiB. Every frame a node must send to work fits it: the
 * largest hello is 522 bytes (a 32-letter nick of 3-byte characters, an advertised host name of 253
 * characters, every number at its largest), a peer list of one entry at most 337 (a longer list is
 * cut to the limit: a peer list is a hint, and a shorter one only has the relay send more copies),
 * a sync is kept within half the limit, and a handshake message (193 bytes at most) has its own
 * limit. A chat line of a few hundred characters fits with it; `send` refuses a longer one. Below it
 * the hello would not fit, and the node could not keep a single peer.
 */
export const MIN_FRAME_BYTES = 1024;

/** Options of {@link createNode}. */
export interface NodeOptions {
  /** TCP port to listen on. Default 0: any free port (see `P2PNode.port`). */
  readonly port?: number;
  /** Interface to listen on. Default: all interfaces (IPv6 and IPv4). */
  readonly host?: string;
  /**
   * `host:port` to tell peers instead of the address they see (port forwarding, NAT). `createNode`
   * throws a RangeError for one that peers could not read back (`parseAddress`) or could not dial
   * (0.0.0.0, ::).
   */
  readonly advertise?: Address;
  /** Display name. Default `anon`. */
  readonly nick?: string;
  /**
   * The node's Ed25519 identity; its id is derived from the public key. Default: the one kept in
   * `dataDir` (created on first start), or a fresh one per start without `dataDir`.
   */
  readonly identity?: Identity;
  /**
   * A 32-byte network key: only nodes holding the same key can connect (Noise XXpsk0); others are
   * refused during the handshake, before either side reveals its identity.
   */
  readonly networkKey?: Uint8Array;
  /** Peers to dial at start; retried with backoff until they answer, and after every loss. */
  readonly peers?: readonly Address[];
  /**
   * Most connected peers; a further one gets `bye full` as soon as its handshake shows who it is
   * (instead of this node's hello). A node sent the hello holds a slot until its own hello comes.
   * Default 32.
   */
  readonly maxPeers?: number;
  /**
   * Peers learned through peer exchange are dialled while fewer than this are connected. Default 6
   * (gossipsub's mesh degree D): a group of up to 7 nodes, such as the seed's examples, ends as a full
   * mesh (every message one hop away); in larger networks a node ends with 6-12 links counting the ones
   * other nodes dial in, enough paths for a flood to survive losses. The relay rule keeps a message's
   * sends below the number of links (20 nodes in a burst: 19 sends over 99 links; 100 nodes at chat
   * pace: ~490 over ~570), but each link costs keepalives and resync and leaves the rule more to
   * prune: measured (README, Performance), 4 made 20-node bursts 1.3x slower, while 8 gave them
   * nothing in the shared harness and cost 100 nodes at chat pace 8 % more CPU and 22 % more sends
   * per message.
   */
  readonly targetPeers?: number;
  /** Dials of a learned address before it is forgotten. Default 8 (about a minute of backoff). */
  readonly learnedDialAttempts?: number;
  /**
   * Directory for the node's identity key, history and lock (created if missing, mode 0700). Without
   * it the node keeps nothing on disk: a new identity per start and history in memory only.
   */
  readonly dataDir?: string;
  /** How much history to keep and to offer peers that reconnect or join late. */
  readonly history?: HistoryWindow;
  /**
   * Largest frame accepted (and sent), in bytes of plaintext: encryption adds 16. Default
   * {@link DEFAULT_MAX_FRAME_BYTES} (256 KiB), where the longest chat line (`MAX_TEXT_LENGTH`
   * characters, 48 KiB of UTF-8 at most) fits. At least {@link MIN_FRAME_BYTES} (1 KiB), which the
   * largest hello fits. Below the longest line's frame (about 48.5 KiB), `send` and `sendAll` throw a
   * RangeError for a text whose frame is over the limit, and peer lists are cut to it; every node of
   * a network should then use the same value, since a frame over it from a peer (a long line, a peer
   * list or sync of a node with a larger limit) ends that peer's link. At most
   * {@link MAX_PAYLOAD_BYTES} (16 MiB less 6 bytes), the longest message the history keeps: a
   * frame's plaintext is a message as the history writes it, and a longer one would pass the dedup
   * check (its id marked seen) and then be neither kept, shown nor relayed, a gap that resync would
   * ask peers to fill forever. `createNode` throws a RangeError for a value outside these bounds, or
   * one that is not an integer.
   *
   * Lowered on a `dataDir` a node used with a higher limit, the history may hold messages whose
   * frames are over it (nothing longer is taken in while it runs: the decoder refuses such a frame,
   * `send` such a text). They are kept and shown by `history()`, and a run with a limit they fit
   * sends them again; this one leaves them out of every resync answer (the rest of it goes: peers
   * get them from nodes whose limit they fit) and logs one warning at start, naming how many there
   * are and the longest.
   */
  readonly maxFrameBytes?: number;
  readonly writer?: WriterOptions;
  readonly timing?: NodeTiming;
  /** Abuse limits; see {@link LIMIT_DEFAULTS}. */
  readonly limits?: NodeLimits;
  /** Where the node logs. Default: nowhere. */
  readonly log?: Logger;
}

/** Counters of a node. */
export interface NodeStats {
  /** Messages dropped because their signature or sender id did not verify. */
  readonly invalidMessages: number;
  /** Messages dropped because their sender was over its rate ({@link NodeLimits.senderMessages}). */
  readonly rateLimitedMessages: number;
  /**
   * Gap repair rounds: a sync sent to one peer, or to every peer, because a message stayed missing
   * while later ones of its sender arrived ({@link NodeTiming.gapRepairMs}).
   */
  readonly gapRepairs: number;
  /** Messages held in the history. */
  readonly historySize: number;
  /** Addresses the node knows to dial: given ones, and learned ones (bounded by {@link NodeLimits.maxLearnedAddresses}). */
  readonly knownAddresses: number;
  /** Connection attempts in flight (bounded by {@link NodeLimits.maxDials}). */
  readonly dialsInFlight: number;
}

/** A running node. See {@link createNode}. */
export interface P2PNode {
  /** This node's id. */
  readonly id: string;
  /** The port it listens on. */
  readonly port: number;
  /** Its current nickname. */
  readonly nick: string;
  /** Messages received from the network, each once; never the node's own. Hot: subscribe early. */
  readonly messages$: Observable<ChatMessage>;
  /** The connected peers; replays the current list to each new subscriber. */
  readonly peers$: Observable<readonly PeerInfo[]>;
  /** Peers coming and going. Hot. */
  readonly events$: Observable<NodeEvent>;
  /** The connected peers now. */
  peers(): readonly PeerInfo[];
  /** The last `limit` messages of the history (own ones included), oldest first. */
  history(limit?: number): readonly ChatMessage[];
  /** Counters of the node; see {@link NodeStats}. */
  stats(): NodeStats;
  /**
   * Sends a chat message to every node of the network and returns it. With a data directory the
   * message is in the history log when this returns.
   * @throws {RangeError} when `text` is empty, longer than `MAX_TEXT_LENGTH` or has a lone surrogate,
   *   when its frame is over `maxFrameBytes` (only below the default, see {@link NodeOptions}), or
   *   when the node is closed. The frame checked is the binary one: a peer that reads only JSON
   *   frames (an older node) is not sent a message whose JSON is over the limit (a warning says so).
   */
  send(text: string): ChatMessage;
  /**
   * Sends several messages at once, in order, and returns them: one signature and one log write
   * cover each 64 of them (a hash tree, see lib/security/sign.ts), so a pasted block of lines costs
   * little more than one line does. With a data directory they are in the history
   * log when this returns.
   * @throws {RangeError} when a text is empty, longer than `MAX_TEXT_LENGTH`, has a lone surrogate
   *   or makes a frame over `maxFrameBytes` (then none is sent), or the node is closed.
   */
  sendAll(texts: readonly string[]): ChatMessage[];
  /**
   * Dials `address` (a `host:port` string or an {@link Address}) and keeps it connected, retrying with
   * backoff; returns what it did now (see {@link ConnectOutcome}). @throws {AddressError} for a
   * malformed string.
   */
  connect(address: string | Address): ConnectOutcome;
  /** Changes the nickname used from now on. @throws {RangeError} for an empty or too long name. */
  setNick(nick: string): void;
  /**
   * Closes every connection and the listener, writes the history and releases the data directory;
   * resolves when all sockets are closed. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * What {@link P2PNode.connect} did with an address, which it keeps dialling in any case (but its own):
 * `dialling` it (at once, or when a dial in flight ends: they are capped); `already-dialling`: a dial
 * of it is in flight, and no second one starts; `connected`: its node is a
 * peer already (dialled again if the link breaks); `full`: the node has `maxPeers` peers, slots held
 * for nodes it said hello to included, and dials it once one is free; `self`: it is this node, not
 * dialled; `closed`: the node is closed.
 */
export type ConnectOutcome = 'dialling' | 'already-dialling' | 'connected' | 'full' | 'self' | 'closed';

interface Target {
  readonly addr: string;
  readonly address: Address;
  /** Given by the user (command line, `connect`): retried forever. Learned ones are forgotten. */
  persistent: boolean;
  /** The node there, as far as this node knows: see `idProven`. */
  nodeId: string | undefined;
  /**
   * `nodeId` was proven by a handshake: this node dialled the address and that node's hello came, or
   * (a learned address) the node's own verified hello advertised it: enough not to dial the address
   * while that node is a peer, not to keep the address over others (see `proven`). Otherwise a list's
   * word, a hint that is never enough to skip a dial: a peer could name an address under the id of a
   * node that is connected (a second identity of its own) and keep it from being dialled. A list's
   * word is not taken at all for an address the user gave, nor over a proven id.
   */
  idProven: boolean;
  /**
   * `nodeId` was proven by this node's own dial of the address. A hello's `addr` is the node's own
   * word about where it listens: enough for a learned address, not for one the user gives later
   * (another peer could have claimed it first).
   */
  idDialled: boolean;
  attempts: number;
  timer: NodeJS.Timeout | undefined;
  dialing: boolean;
  /**
   * A node was found there: this node dialled it and its hello was verified. An inbound peer's
   * hello naming it does not count: a hello proves who sent it, not that it listens there, and
   * identities cost nothing to make. A flood of unproven addresses never pushes a proven one out.
   */
  proven: boolean;
  /** The peer whose list named it (unproven ones count against that peer's share of the table). */
  readonly source: string | undefined;
}

interface ActivePeer {
  conn: Connection;
  info: PeerInfo;
  /** When it came up (ms): a new connection of it taking the place of the old one keeps it. */
  readonly since: number;
  /**
   * When `info.nick` was said, in the peer's own terms, never this node's clock (the two differ: a
   * peer whose clock lagged had its rename ignored, one ahead had old messages a resync brought
   * turn its nick back), but for a peer of an older build (see `legacyNick`): after its message
   * `nickSeq`. A message's own seq, or for a hello the
   * peer's last message then (the messages it sends after the hello have greater ones). `nickTs`:
   * for a hello, the peer's clock then, which orders two hellos after the same message (connections
   * that crossed); -1 for a message, older than a hello that carries its seq (sent after it).
   */
  nickSeq: number;
  nickTs: number;
  /**
   * Its hello said no `seq` (a build before hellos carried it): nothing orders its nicks in its own
   * terms, so the rule of those builds holds for it. A message's nick is taken when its `ts` is past
   * `nickTs`, this node's clock at the hello, then the newest `ts` taken (history a resync brings
   * after the hello does not turn the nick back); a new connection's hello always gives its nick.
   */
  legacyNick: boolean;
}

const DEFAULT_TIMING = {
  helloTimeoutMs: 10_000,
  pingIntervalMs: 5_000,
  peerTimeoutMs: 15_000,
  connectTimeoutMs: 5_000,
  peerListDelayMs: 250,
  rateResyncDelayMs: 5_000,
  antiEntropyMs: 2_000,
  gapRepairMs: 500,
  relearnMs: 600_000,
} as const;

/** A system error as a line says it: its message starts with its code (ENOSPC: no space left on device, write). */
function systemReason(err: NodeJS.ErrnoException): string {
  return err.message.startsWith(`${err.code}`) ? err.message : `${err.code}: ${err.message}`;
}

function checkNick(nick: string): string {
  // A lone surrogate (half of a character cut off) cannot be encoded, nor signed: refused here, not
  // at the first message.
  if (nick.length === 0 || nick.length > MAX_NICK_LENGTH || /\p{Cc}/u.test(nick) || !nick.isWellFormed()) {
    throw new RangeError(
      `nickname must be 1-${MAX_NICK_LENGTH} UTF-16 code units (${MAX_NICK_LENGTH} letters of most scripts, fewer for emoji), without control characters or lone surrogates`,
    );
  }
  return nick;
}

function positive(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1)
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

/** `options` without the fields set to undefined (which a spread would copy over the defaults). */
function definedOnly<T extends object>(options: T | undefined): Partial<T> {
  return Object.fromEntries(
    Object.entries(options ?? {}).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

/** setTimeout's longest delay, ms: Node fires a longer one after 1 ms instead (with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Checks that `value` (option `name`) is a whole number of ms from 1 to `max`. */
function timerMs(name: string, value: number, max: number): void {
  if (positive(name, value) > max) throw new RangeError(`${name} must be at most ${max}, got ${value}`);
}

/**
 * Checks a node's timers ({@link NodeTiming}).
 * @throws {RangeError} for one that is not a whole number of ms in its range.
 */
function checkTiming(
  timing: Required<Omit<NodeTiming, 'backoff'>> & { readonly backoff: BackoffOptions },
): void {
  for (const name of [
    'helloTimeoutMs',
    'pingIntervalMs',
    'peerTimeoutMs',
    'connectTimeoutMs',
    'peerListDelayMs',
    'rateResyncDelayMs',
    'relearnMs',
  ] as const)
    timerMs(name, timing[name], MAX_TIMER_MS);
  // Both go out in syncs' minAgeMs (anti-entropy's halved), which peers take up to a minute.
  timerMs('antiEntropyMs', timing.antiEntropyMs, 2 * MAX_SYNC_MIN_AGE_MS);
  timerMs('gapRepairMs', timing.gapRepairMs, MAX_SYNC_MIN_AGE_MS);
  const backoff = { ...BACKOFF_DEFAULTS, ...definedOnly(timing.backoff) };
  timerMs('backoff.baseMs', backoff.baseMs, MAX_TIMER_MS);
  timerMs('backoff.maxMs', backoff.maxMs, MAX_TIMER_MS);
}

/**
 * Starts a node: listens, dials `options.peers`, and relays chat messages through the pipeline
 * fromSocket → decode → merge → rate, signature and dedup checks → remember → peer-list merge /
 * relay → per-peer writers.
 *
 * Resolves once listening. Rejects with the listen error (e.g. `EADDRINUSE`).
 *
 * @example
 * const node = await createNode({ port: 8001, nick: 'ann', peers: [parseAddress('127.0.0.1:8002')] });
 * node.messages$.subscribe((m) => console.log(`${m.nick}: ${m.text}`));
 * node.send('hello');
 */
export async function createNode(options: NodeOptions = {}): Promise<P2PNode> {
  const node = new ChatNode(options);
  try {
    await node.listen();
  } catch (err) {
    node.discard(); // never handed out: its data directory is free again, for a retry on another port
    throw err;
  }
  return node;
}

class ChatNode implements P2PNode {
  readonly id: string;
  nick: string;
  readonly messages$: Observable<ChatMessage>;
  readonly peers$: Observable<readonly PeerInfo[]>;
  readonly events$: Observable<NodeEvent>;

  private readonly store: MessageStore;
  private readonly identity: Identity;
  private readonly security: LinkSecurity;
  private readonly networkTag: Buffer;
  private readonly releaseDataDir: () => void;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly timing: Required<Omit<NodeTiming, 'backoff'>> & { backoff: BackoffOptions };
  private readonly maxPeers: number;
  private readonly targetPeers: number;
  private readonly learnedDialAttempts: number;
  private readonly maxFrameBytes: number;
  /** The history window's age: the oldest message this node takes in (see syncFrame's `since`). */
  private readonly historyMaxAgeMs: number;
  private readonly writerOptions: WriterOptions;
  private readonly advertise: Address | undefined;

  private readonly conns = new Set<Connection>();
  private readonly active = new Map<string, ActivePeer>();
  private readonly targets = new Map<string, Target>();
  /** Addresses that turned out to be this node (bounded: peers may name any number of them). */
  private readonly selfAddrs = boundedLru<string, true>(MAX_SELF_ADDRS);
  /** Sockets of dials not connected yet: destroyed by close, which would otherwise wait for them. */
  private readonly dialSockets = new Set<Socket>();
  private readonly connections$ = new Subject<Connection>();
  /** This node's own messages, signed: a plain Multicast (each passes it, at the sender). */
  private readonly local$ = new Multicast<Inbound<ChatFrame>>();
  private readonly events = new Subject<NodeEvent>();
  private readonly peerList = new BehaviorSubject<readonly PeerInfo[]>([]);
  private readonly peerIds = new BehaviorSubject<readonly string[]>([]);
  private readonly subscription = new Subscription();
  private readonly tick: NodeJS.Timeout;
  private peerListTimer: NodeJS.Timeout | undefined;
  private listenPort = 0;
  private closed = false;
  private closing: Promise<void> | undefined;
  private pingNonce = 0;
  /** When {@link upkeep} last ran (ms). */
  private lastUpkeep = Date.now();
  private readonly acceptRate = new RateLimiter(ACCEPT_RATE, { max: 4096 });
  private lastRefusalLog = 0;
  private readonly limits: Required<NodeLimits>;
  private readonly senderRate: RateLimiter;
  /** When each rate-limited log line (a sender over its rate, a message too large as JSON) was last logged. */
  private readonly limitedLog = boundedLru<string, number>(1024);
  /** Messages dropped because their signature or sender id did not verify. */
  private invalidMessages = 0;
  /** Messages dropped because their sender was over its rate. */
  private rateLimitedMessages = 0;
  /** When a message of each sender was last dropped over its rate: its holes are the rate resync's to fill. */
  private readonly overRateAt = boundedLru<string, number>(1024);
  /**
   * Gap repair: the missing message being watched, the peer to ask first, and whom it was asked of
   * so far (`asked`: 0 nobody, 1 that peer, 2 every peer).
   */
  private gap:
    | { readonly from: string; readonly seq: number; readonly via: string; readonly asked: 0 | 1 | 2 }
    | undefined;
  private gapTimer: NodeJS.Timeout | undefined;
  private gapRepairs = 0;
  /** Senders whose hole no peer filled, and when (see {@link holesLeftAlone}). */
  private readonly gapGivenUp = boundedLru<string, number>(1024);
  /** Anti-entropy: since when news (new messages, a peer lost) waits for a sync; the last news. */
  private entropySince: number | undefined;
  private lastNews = 0;
  private entropyTimer: NodeJS.Timeout | undefined;
  /** What the relay knows of the peers around: each peer's latest peer list. */
  private readonly relayView: RelayView;
  /**
   * Raised whenever what `relayView` answers may change: a peer's new peer list, a peer up, down or
   * replaced (see {@link RelayView.version}).
   */
  private neighbourVersion = 0;
  /** The relay targets of a message for the trusted check (the last answer kept, as relay() does). */
  private readonly relayTargetsOf: (m: Inbound<ChatFrame>, peers: readonly string[]) => readonly string[];
  /** Why a chat frame is not a valid message of this network (lazy checks: relay, resync). */
  private readonly chatProblem: ChatChecker;

  constructor(private readonly options: NodeOptions) {
    this.nick = checkNick(options.nick ?? 'anon');
    this.log = options.log ?? silentLogger;
    // Options first: a bad one throws before the data directory is locked, leaving nothing held.
    // A timer given as undefined takes its default, as a missing one does.
    this.timing = { ...DEFAULT_TIMING, backoff: {}, ...definedOnly(options.timing) };
    checkTiming(this.timing);
    this.maxPeers = positive('maxPeers', options.maxPeers ?? 32);
    this.targetPeers = positive('targetPeers', Math.min(options.targetPeers ?? 6, this.maxPeers));
    this.learnedDialAttempts = positive('learnedDialAttempts', options.learnedDialAttempts ?? 8);
    this.maxFrameBytes = positive('maxFrameBytes', options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    if (this.maxFrameBytes < MIN_FRAME_BYTES) {
      throw new RangeError(
        `maxFrameBytes must be at least ${MIN_FRAME_BYTES} (the largest hello must fit, or no peer could be kept), got ${this.maxFrameBytes}`,
      );
    }
    if (this.maxFrameBytes > MAX_PAYLOAD_BYTES) {
      throw new RangeError(
        `maxFrameBytes must be at most ${MAX_PAYLOAD_BYTES} (the longest message the history keeps), got ${this.maxFrameBytes}`,
      );
    }
    this.historyMaxAgeMs = options.history?.maxAgeMs ?? HISTORY_DEFAULTS.maxAgeMs;
    if (!(this.historyMaxAgeMs >= MIN_HISTORY_AGE_MS)) {
      throw new RangeError(
        `history: maxAgeMs must be at least ${MIN_HISTORY_AGE_MS} (10 minutes: no older message is taken in, so a shorter age drops messages of peers whose clocks lag), got ${this.historyMaxAgeMs}`,
      );
    }
    const historyMaxMessages = options.history?.maxMessages;
    if (historyMaxMessages !== undefined && historyMaxMessages > MAX_HISTORY_MESSAGES) {
      throw new RangeError(
        `history: maxMessages must be at most ${MAX_HISTORY_MESSAGES}, got ${historyMaxMessages}`,
      );
    }
    this.writerOptions = writerSettings(options.writer);
    this.limits = { ...LIMIT_DEFAULTS, ...options.limits };
    positive('maxDials', this.limits.maxDials);
    positive('maxLearnedAddresses', this.limits.maxLearnedAddresses);
    // Checked here, not at the first connection that would build a bucket of them.
    checkRate(this.limits.peerFrames, 'peerFrames');
    checkRate(this.limits.peerSyncs, 'peerSyncs');
    this.senderRate = new RateLimiter(this.limits.senderMessages, { max: 10_000 });
    if (options.advertise !== undefined) {
      // As peers read it from the hello: one they cannot parse has the node dropped at every hello.
      try {
        parseAddress(formatAddress(options.advertise));
      } catch (err) {
        if (!(err instanceof AddressError)) throw err;
        throw new RangeError(`advertise: ${err.message}`, { cause: err });
      }
      if (isUnspecified(options.advertise.host))
        throw new RangeError('advertise: an unspecified address (0.0.0.0, ::) cannot be advertised');
    }
    this.advertise = options.advertise;

    const dataDir = options.dataDir;
    this.releaseDataDir = dataDir === undefined ? () => {} : lockDataDir(dataDir);
    try {
      this.identity =
        options.identity ?? (dataDir === undefined ? generateIdentity() : loadOrCreateIdentity(dataDir));
      this.id = this.identity.id;
      this.relayView = {
        selfId: this.id,
        neighboursOf: (id) => this.active.get(id)?.conn.peerRef?.neighbours,
        version: () => this.neighbourVersion,
      };
      this.relayTargetsOf = lastRelayTargets(this.relayView);
      if (options.networkKey !== undefined && options.networkKey.length !== NETWORK_KEY_BYTES) {
        throw new RangeError(
          `networkKey must be ${NETWORK_KEY_BYTES} bytes, got ${options.networkKey.length}`,
        );
      }
      this.security = { identity: this.identity, networkKey: options.networkKey };
      this.networkTag = networkTag(options.networkKey);
      this.chatProblem = chatProblemChecker(this.networkTag);
      const { store, repair } = MessageStore.open(this.id, dataDir, options.history);
      this.store = store;
      store.onWriteFailure = (err) => {
        if (err === undefined) {
          this.log.info(`history: writing to ${dataDir} again, the messages kept meanwhile included`);
          return;
        }
        this.log.error(
          `history: cannot write to ${dataDir} (${systemReason(err)}); messages are kept in memory, shown and relayed, and written once it works again (tried at least ${WRITE_RETRY_MS / 1000} s apart)`,
        );
      };
      // A warning, not an error: nothing is kept in memory only, the log just grows until then.
      store.onCompactionFailure = (err) => {
        if (err === undefined) {
          this.log.info(`history: compacting the log in ${dataDir} again`);
          return;
        }
        this.log.warn(
          `history: cannot compact the log in ${dataDir} (${systemReason(err)}); messages are still written to it, which grows until a compaction works (tried again ${COMPACT_RETRY_MS / 1000} s later, then twice as long each time up to ${COMPACT_RETRY_MAX_MS / 60_000} minutes)`,
        );
      };
      if (repair !== undefined) {
        this.log.warn(
          `history: dropped ${repair.droppedBytes} bytes of ${dataDir} (${repair.reason}); peers will resend what is missing`,
        );
      }
      this.noteLongerThanFrames();
    } catch (err) {
      this.releaseDataDir();
      throw err;
    }

    this.events$ = this.events.asObservable();
    this.peers$ = this.peerList.asObservable();

    // Each connection's frames, after its handshake, merged into one inbound stream. A failing peer
    // ends its own stream only; a bug (TypeError, RangeError) errors the whole stream and is thrown.
    const inbound$ = this.connections$.pipe(
      mergeMap((conn) => this.session(conn)),
      shareHot(),
    );
    // Cheap checks first (held or older than held: the store knows; sender over its rate), so each
    // message is verified once; it is remembered as seen, and charged to its sender, only once
    // verified, so a tampered copy cannot shadow the real one nor spend the sender's budget.
    const sender = (m: Inbound<ChatFrame>): string => m.frame.from;
    // Measured by the sender's clock (its timestamps), so a paced paste is not charged for waiting
    // behind its own first burst on the way here.
    const senderTime = (m: Inbound<ChatFrame>): number => m.frame.ts;
    // This node's own messages join after the checks: each is new (a fresh seq and id), signed here,
    // and not charged to a rate (the CLI paces a paste itself). A copy coming back is known to the
    // store: held, or at or below its sender's floor once evicted.
    // The stages of a received message, as plain functions run in one step (filterMap): each is an
    // exported operator too (rateLimit, verifySignatures, dedup, spendRate), and through six operators
    // a message made ~30 more calls, at every node, mostly in code V8 has not optimised.
    const underRate = rateLimitCheck({
      limiter: this.senderRate,
      key: sender,
      time: senderTime,
      onLimited: (m: Inbound<ChatFrame>) => this.overRate(m),
    });
    const signed = signatureCheck({
      network: this.networkTag,
      onInvalid: (m, reason) => this.invalidMessage(m, reason),
      checker: this.chatProblem,
      // From its author, and every peer has it from the author too: nothing to vouch for.
      trusted: (m) => this.relayTargetsOf(m, this.peerIds.value).length === 0,
    });
    const newIds = dedupCheck({
      // Sender and id: ids are unique per sender only, and one sender's message under another's
      // id must not hide that one.
      key: (m: Inbound<ChatFrame>) => `${m.frame.from}:${m.frame.id}`,
      time: (m) => m.frame.ts,
      maxAgeMs: this.historyMaxAgeMs,
    });
    const spend = spendRateStep({ limiter: this.senderRate, key: sender, time: senderTime });
    const received$ = defer(() => {
      const isNew = newIds();
      return inbound$.pipe(
        filterMap((m): Inbound<ChatFrame> | undefined => {
          if (!isChat(m) || this.store.knows(m.frame) || !underRate(m)) return undefined;
          const checked = signed(m);
          if (checked === undefined || !isNew(checked)) return undefined;
          spend(checked);
          return checked;
        }),
      );
    });
    const chat$ = merge(this.local$.asObservable(), received$).pipe(
      remember(this.store),
      tap((m) => {
        this.noteNews();
        if (m.peer === null) return;
        if (this.store.missesBefore(m.frame)) this.noteGap(m.frame, m.peer.id);
        this.noteNick(m.frame);
      }),
      shareHot(),
    );
    this.messages$ = chat$.pipe(
      // Own messages come back only through resync after a damaged log: kept, never shown as received.
      // Not shared: chat$ is hot already, and a Subject per message costs more than the map (the
      // CLI is the one subscriber; each subscriber gets its own copy of a message).
      filterMap((m) => (m.peer !== null && m.frame.from !== this.id ? toMessage(m.frame) : undefined)),
    );
    this.subscription.add(
      chat$.pipe(relay(this.peerIds, this.relayView)).subscribe(({ frame, payload, to, unverified }) => {
        // Let through unchecked, but a peer came since: checked now, as it goes on.
        if (unverified === true && this.chatProblem(frame, payload) !== undefined) return;
        // Indexed: for-of makes an iterator result per step in code V8 has not optimised yet.
        for (let i = 0; i < to.length; i++) {
          const conn = this.active.get(to[i]!)?.conn;
          if (conn !== undefined) this.sendChat(conn, payload, frame);
        }
      }),
    );
    // The peer whose list it is: mergePeers emits a list's new entries as the list goes in, at once
    // (a mergeMap of an array), so the last list seen is the one each entry comes from.
    let listFrom: string | undefined;
    this.subscription.add(
      inbound$
        .pipe(
          filterMap(peersOnly),
          tap((list) => (listFrom = list.peer?.id)),
          mergePeers({ selfId: this.id, rememberMs: this.timing.relearnMs }),
        )
        .subscribe((entry) => this.learn(entry, listFrom)),
    );

    this.server = createServer((socket) => this.accept(socket));
    this.tick = setInterval(() => this.upkeep(), this.timing.pingIntervalMs);
    this.tick.unref();
  }

  get port(): number {
    return this.listenPort;
  }

  /** Closes the history and releases the data directory of a node whose listen() failed. */
  discard(): void {
    try {
      this.store.close();
    } finally {
      this.releaseDataDir();
    }
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        clearInterval(this.tick);
        this.subscription.unsubscribe();
        reject(err);
      };
      this.server.once('error', onError);
      const host = this.options.host;
      this.server.listen({ port: this.options.port ?? 0, ...(host !== undefined ? { host } : {}) }, () => {
        this.server.off('error', onError);
        this.server.on('error', (err) => this.log.error(`listener: ${err.message}`));
        const address = this.server.address();
        this.listenPort = typeof address === 'object' && address !== null ? address.port : 0;
        // Debug: the CLI says so itself, in every mode (its ready line, or event); at info it said it twice.
        this.log.debug(`listening on port ${this.listenPort} as ${this.id} (${this.nick})`);
        for (const peer of this.options.peers ?? []) this.connect(peer);
        resolve();
      });
    });
  }

  peers(): readonly PeerInfo[] {
    return this.peerList.value;
  }

  stats(): NodeStats {
    return {
      invalidMessages: this.invalidMessages,
      rateLimitedMessages: this.rateLimitedMessages,
      gapRepairs: this.gapRepairs,
      historySize: this.store.size,
      knownAddresses: this.targets.size,
      dialsInFlight: this.dialsInFlight(),
    };
  }

  history(limit = 20): readonly ChatMessage[] {
    return this.store.recent(limit).map(({ frame }) => toMessage(frame));
  }

  send(text: string): ChatMessage {
    return this.sendAll([text])[0]!;
  }

  sendAll(texts: readonly string[]): ChatMessage[] {
    if (this.closed) throw new RangeError('send: the node is closed');
    for (const text of texts) {
      if (text.length === 0 || text.length > MAX_TEXT_LENGTH) {
        throw new RangeError(`send: text must be 1-${MAX_TEXT_LENGTH} characters, got ${text.length}`);
      }
      // Checked here, not left to the signer: then none is sent, and no sequence number is used.
      if (!text.isWellFormed())
        throw new RangeError('send: text has a lone surrogate (UTF-8 cannot carry it)');
    }
    this.checkFrameSizes(texts);
    const sent: ChatMessage[] = [];
    for (let start = 0; start < texts.length; start += SIGN_BATCH) {
      const ts = Date.now();
      const batch = texts
        .slice(start, start + SIGN_BATCH)
        .map((text) => ({ id: messageId(), nick: this.nick, ts, seq: this.store.nextSeq(), text }));
      for (const { frame, payload } of signedChats(this.identity, batch, this.networkTag)) {
        this.local$.next({ peer: null, frame, payload });
        sent.push(toMessage(frame));
      }
      // Written now rather than with the rest of the turn: a message sendAll() returned is kept.
      // And batch by batch: what a batch allocates is done with before the next one is signed.
      this.store.flush();
    }
    return sent;
  }

  /**
   * Checks that each text's frame fits `maxFrameBytes` as {@link sendAll} will sign it (in batches of
   * {@link SIGN_BATCH}, each message with the proof of its batch: a hash per level of its tree at
   * most). A frame over it could not be written to any peer; with the default limit every text fits,
   * and nothing is counted (this runs for every message sent).
   * @throws {RangeError} naming the first text that does not fit.
   */
  private checkFrameSizes(texts: readonly string[]): void {
    if (this.maxFrameBytes >= LONGEST_CHAT_FRAME) return;
    const nick = Buffer.byteLength(this.nick, 'utf8');
    for (let start = 0; start < texts.length; start += SIGN_BATCH) {
      const batch = Math.min(SIGN_BATCH, texts.length - start);
      const pathBytes = batch === 1 ? undefined : PATH_HASH_BYTES * Math.ceil(Math.log2(batch));
      for (let i = start; i < start + batch; i++) {
        const text = Buffer.byteLength(texts[i]!, 'utf8');
        const bytes = binaryChatBytes(MESSAGE_ID_LENGTH, nick, text, this.id.length, pathBytes);
        if (bytes > this.maxFrameBytes) {
          throw new RangeError(
            `send: a text of ${text} bytes of UTF-8 makes a frame of ${bytes} bytes, over maxFrameBytes (${this.maxFrameBytes})`,
          );
        }
      }
    }
  }

  connect(address: string | Address): ConnectOutcome {
    if (this.closed) return 'closed';
    const parsed = typeof address === 'string' ? parseAddress(address) : address;
    const addr = formatAddress(parsed);
    if (this.selfAddrs.has(addr)) {
      this.log.info(`${addr} is this node; not dialling it`);
      return 'self';
    }
    let target = this.targets.get(addr);
    if (target === undefined) {
      target = newTarget(addr, parsed, true, undefined);
      this.targets.set(addr, target);
    }
    target.persistent = true;
    // A peer list's word, or a hello's (an inbound peer may have named this address as its own):
    // for an address the user gives, only a dial of it tells who is there. The id stays a hint
    // (see dialTakesNoSlot).
    if (!target.idDialled) target.idProven = false;
    if (this.reached(target)) return 'connected';
    if (target.dialing) {
      // In flight (connecting, or in its handshake): a second dial would be a duplicate connection.
      this.log.info(`already dialling ${addr}: not dialling it a second time`);
      return 'already-dialling';
    }
    if (this.isFull() && !this.dialTakesNoSlot(target)) {
      this.log.info(
        `not dialling ${addr} now: already ${this.peerCount()}, or about to be, the most this node takes (maxPeers); dialling it once one leaves`,
      );
      return 'full';
    }
    this.dialNow(target);
    return 'dialling';
  }

  setNick(nick: string): void {
    this.nick = checkNick(nick);
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  // ---- connections -------------------------------------------------------------------------

  private accept(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const host = normalizeHost(socket.remoteAddress ?? 'unknown');
    let refusal: string | undefined;
    // Loopback is exempt from the per-host rate: every node on this host shares it.
    if (!isLoopback(host) && !this.acceptRate.tryTake(host)) {
      refusal = `more than ${ACCEPT_RATE.burst} connections in a burst from ${host}`;
    } else if (this.pendingHandshakes() >= MAX_PENDING_HANDSHAKES && !this.shedOldestPending()) {
      refusal = `${MAX_PENDING_HANDSHAKES} connections are already in their handshake`;
    }
    if (refusal !== undefined) {
      // Shed the flood, not the honest peers: a refused socket costs nothing more.
      this.warnOncePerSecond(`refusing connections: ${refusal}`);
      socket.on('error', () => {});
      socket.destroy();
      return;
    }
    this.attach(socket, false, undefined);
  }

  /** Logs `line` unless a line of the connection flood was logged within the last second. */
  private warnOncePerSecond(line: string): void {
    const now = Date.now();
    if (now - this.lastRefusalLog <= 1000) return;
    this.lastRefusalLog = now;
    this.log.warn(line);
  }

  /** Connections still before their hello (handshake included), but for those closed already. */
  private pendingHandshakes(): number {
    let n = 0;
    for (const conn of this.conns) if (conn.hello === undefined && !conn.socket.destroyed) n++;
    return n;
  }

  /**
   * Closes an inbound connection still before its hello, making room for a new one; false when
   * there is none (the slots are this node's own dials). Refusing the new one instead let
   * connections that never speak keep every new peer out: each held its slot for the hello timeout,
   * so a trickle of 7 a second (two hosts within the accept rate) renewed all 64 for ever. Now one
   * is held until 64 newer ones come. The one closed is the oldest that sent nothing, if any: a
   * socket that is silent costs its opener nothing, while an honest handshake, which has sent its
   * first message, is a round trip or two from its hello; closing the oldest of all (it used to be
   * so) shut out the honest peer whose handshake began just before a flood of silent ones.
   */
  private shedOldestPending(): boolean {
    let shed: Connection | undefined;
    for (const conn of this.conns) {
      // A Set iterates in insertion order: the oldest first.
      if (conn.outbound || conn.hello !== undefined || conn.socket.destroyed) continue;
      shed ??= conn;
      if (conn.socket.bytesRead === 0) {
        shed = conn; // not a byte of a handshake came on it
        break;
      }
    }
    if (shed === undefined) return false;
    shed.closeReason = `closed to make room: ${MAX_PENDING_HANDSHAKES} connections were in their handshake`;
    shed.reasonLogged = true;
    this.log.debug(`${shed.label}: ${shed.closeReason}`);
    this.warnOncePerSecond(
      `connections: ${MAX_PENDING_HANDSHAKES} in their handshake, closing one to make room (the oldest that sent nothing, else the oldest)`,
    );
    shed.destroy();
    return true;
  }

  private attach(socket: Socket, outbound: boolean, dialed: string | undefined): void {
    const conn: Connection = new Connection(socket, outbound, {
      maxFrameBytes: this.maxFrameBytes,
      writer: this.writerOptions,
      frameRate: this.limits.peerFrames,
      syncRate: this.limits.peerSyncs,
      onWriteFault: (c, err) => this.drop(c, err),
      security: this.security,
      dialed,
      // Copies of a held message are dropped on their raw bytes, before parsing (each message
      // reaches a node once per link); a copy of an older one takes the full path, dropped there.
      isKnown: (id, payload) => this.store.holdsCopy(id, payload),
      // Full: say so instead of the hello, so the peer never sees us as up for a moment.
      refuse: (remoteId) => (this.isFullFor(remoteId) ? this.refuseFull(conn) : undefined),
    });
    this.conns.add(conn);
    const hello: HelloFrame = {
      type: 'hello',
      v: PROTOCOL_VERSION,
      id: this.id,
      nick: this.nick,
      port: this.advertise?.port ?? this.listenPort,
      ...(this.advertise !== undefined ? { addr: formatAddress(this.advertise) } : {}),
      pack: conn.packLimit,
      binary: true,
      seq: this.store.ownSeq,
      ts: Date.now(),
    };
    conn.send(hello);
    this.log.debug(`${outbound ? 'connected to' : 'accepted'} ${conn.remoteSocketAddress}`);
    this.connections$.next(conn);
  }

  /** One connection's frames after the handshake, as pipeline input; handles hello, ping and pong. */
  private session(conn: Connection): Observable<Inbound> {
    const helloTimeoutMs = this.timing.helloTimeoutMs;
    // One step per frame instead of timeout + map + filter + catchError (subscribers each frame
    // passes through, mostly before V8 has optimised any of them): the first frame (the hello) must
    // come within helloTimeoutMs of the subscription; each frame is handled by onFrame, and what it
    // returns goes on. A peer's fault (a throw from onFrame, its stream's error) drops that peer and
    // ends its stream only; a bug (TypeError, RangeError) errors the inbound stream.
    const inbound$ = new Observable<Inbound>((subscriber) => {
      const fail = (err: unknown): void => {
        if (!isPeerError(err)) {
          subscriber.error(err);
          return;
        }
        try {
          this.drop(conn, err as Error);
        } catch (bug) {
          subscriber.error(bug); // as catchError did: a throw while dropping errors the stream
          return;
        }
        subscriber.complete();
      };
      let helloTimer: NodeJS.Timeout | undefined = setTimeout(() => {
        fail(new ProtocolError('ERR_HELLO_TIMEOUT', `no hello within ${helloTimeoutMs} ms`));
      }, helloTimeoutMs);
      const frames = conn.frames$.subscribe({
        next: (decoded) => {
          if (helloTimer !== undefined) {
            clearTimeout(helloTimer);
            helloTimer = undefined;
          }
          let inbound: Inbound | undefined;
          try {
            inbound = this.onFrame(conn, decoded);
          } catch (err) {
            fail(err);
            return;
          }
          if (inbound !== undefined) subscriber.next(inbound);
        },
        error: fail,
        complete: () => subscriber.complete(),
      });
      return () => {
        clearTimeout(helloTimer);
        frames.unsubscribe();
      };
    });
    return inbound$.pipe(finalize(() => this.onClosed(conn)));
  }

  private onFrame(conn: Connection, { frame, payload, layout }: Decoded): Inbound | undefined {
    const hello = conn.hello;
    if (hello === undefined) {
      if (conn.closing) return undefined; // refused before its hello (full): what it sent is moot
      if (frame.type === 'bye') {
        this.onBye(conn, frame.reason); // a refusal, instead of its hello
        return undefined;
      }
      if (frame.type !== 'hello')
        throw new ProtocolError('ERR_EXPECTED_HELLO', `expected hello, got ${frame.type}`);
      this.onHello(conn, frame);
      return undefined;
    }
    switch (frame.type) {
      case 'hello':
        throw new ProtocolError('ERR_DUPLICATE_HELLO', 'second hello on one connection');
      case 'ping':
        conn.send({ type: 'pong', n: frame.n });
        return undefined;
      case 'pong':
        for (const probe of conn.probes) {
          if (probe.n !== frame.n) continue;
          probe.answered = true;
          setImmediate(probe.settle); // a duplicate is not kept open a moment longer than needed
        }
        return undefined;
      case 'bye':
        this.onBye(conn, frame.reason);
        return undefined;
      case 'sync':
        conn.takeSync(frame, (sync) => this.answerSync(conn, sync));
        return undefined;
      case 'peers':
        conn.noteNeighbours(new Set(frame.peers.map((p) => p.id)));
        this.neighbourVersion++;
        return { peer: conn.peerRef!, frame, payload };
      case 'chat':
        return { peer: conn.peerRef!, frame, payload, layout };
    }
  }

  private onHello(conn: Connection, hello: HelloFrame): void {
    if (hello.id !== conn.session?.remoteId) {
      throw new ProtocolError(
        'ERR_BAD_FRAME',
        `hello claims id ${hello.id}, the handshake proved another key`,
      );
    }
    conn.greet(this.withAdvertised(conn, hello));
    const target = conn.dialed === undefined ? undefined : this.targets.get(conn.dialed);
    if (hello.id === this.id) {
      // We dialled ourselves (our own address, or one that leads back here): forget that address.
      if (conn.dialed !== undefined) {
        this.selfAddrs.set(conn.dialed, true);
        if (target !== undefined) this.forget(target);
        this.log.info(`${conn.dialed} is this node; not dialling it again`);
      }
      conn.end(0);
      return;
    }
    if (target !== undefined) {
      target.nodeId = hello.id;
      target.idProven = true;
      target.idDialled = true;
      target.dialing = false;
      target.proven = true;
    }
    const existing = this.active.get(hello.id);
    if (existing !== undefined) this.onDuplicate(conn, existing);
    else this.adopt(conn);
  }

  /**
   * The hello as this node keeps it: its advertised address in canonical spelling (one node, one
   * address), or none when it is a loopback address and the peer is on another host: that address
   * would lead here, and told to our other peers it would become this host's address (see localize).
   * The peer is then known by its socket's host and its hello's port.
   * @throws {ProtocolError} for an advertised address that is malformed or unspecified (0.0.0.0).
   */
  private withAdvertised(conn: Connection, hello: HelloFrame): HelloFrame {
    if (hello.addr === undefined) return hello;
    let advertised: Address;
    try {
      advertised = parseAddress(hello.addr);
    } catch (err) {
      if (!(err instanceof AddressError)) throw err;
      throw new ProtocolError(
        'ERR_BAD_FRAME',
        `hello advertises a malformed address ${JSON.stringify(hello.addr)}`,
      );
    }
    if (isUnspecified(advertised.host)) throw new ProtocolError('ERR_BAD_FRAME', 'hello advertises 0.0.0.0');
    if (isLoopback(advertised.host) && !isLoopback(conn.remoteHost)) {
      const { addr, ...rest } = hello;
      this.log.info(
        `peer ${hello.id.slice(0, 8)} at ${conn.remoteHost} advertises ${JSON.stringify(addr)}, a loopback address: ignored`,
      );
      return rest;
    }
    const addr = formatAddress(advertised);
    return addr === hello.addr ? hello : { ...hello, addr };
  }

  /**
   * A second connection to a peer that has one already. Both sides must keep the same one whatever
   * order their hellos came in (see preferred). Before the older one is kept, it must answer a
   * ping: when the peer restarted, or its host went away, the older one is dead although it has not
   * timed out yet, and keeping it would shut the peer out until it does.
   */
  private onDuplicate(conn: Connection, existing: ActivePeer): void {
    // One the peer retired (`bye duplicate`) is never kept over one it has not.
    if (existing.conn.retiredByPeer || this.preferred(conn, existing.conn)) {
      this.log.debug(`duplicate connection to ${conn.label}: keeping the new one (#${conn.number})`);
      this.retire(this.switchTo(existing, conn));
    } else if (existing.conn.probes.filter((p) => !p.candidate.closing).length < MAX_PROBES) {
      this.probeThenRetire(existing.conn, conn);
    } else {
      this.retire(conn); // probed enough already: a peer that keeps connecting again waits for those
    }
  }

  /** Makes `conn` the connection to the peer of `existing` (no peer-down); returns the old one. */
  private switchTo(existing: ActivePeer, conn: Connection): Connection {
    const old = existing.conn;
    existing.conn = conn;
    const hello = conn.hello!;
    const [seq, ts] = [hello.seq ?? 0, hello.ts ?? 0];
    if (hello.seq === undefined) {
      // A build before hellos carried `seq`: its new hello's nick, as those builds took it.
      existing.info = this.infoOf(conn);
      existing.legacyNick = true;
      existing.nickSeq = 0;
      existing.nickTs = Date.now();
    } else if (
      existing.legacyNick ||
      seq > existing.nickSeq ||
      (seq === existing.nickSeq && ts >= existing.nickTs)
    ) {
      // Its hello may have left before a rename we learnt since (from a message, or the other
      // connection's hello): its nick only if it is as new at least (see nickSeq); a tie goes to it.
      existing.info = this.infoOf(conn);
      existing.legacyNick = false;
      existing.nickSeq = seq;
      existing.nickTs = ts;
    } else {
      existing.info = { ...this.infoOf(conn), nick: existing.info.nick };
    }
    this.publishPeers();
    conn.send(this.peerListFor(conn));
    this.sendSync(conn, this.syncFrame());
    return old;
  }

  /**
   * Pings `kept`, then retires `conn` if `kept` answered (a pong with the ping's nonce: the peer's
   * own pings and pongs do not count, so both sides judge by one round trip each way) within a ping
   * interval, or more while `kept` is heard from (see below). If it did not, `kept` is dropped and
   * `conn` takes its place; if it closed meanwhile, `conn` becomes the connection to the peer.
   * `conn` carries frames as usual meanwhile: the peer's messages to us are not held up.
   */
  private probeThenRetire(kept: Connection, conn: Connection): void {
    const id = conn.peerId!;
    let settled = false;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const at = kept.probes.indexOf(probe);
      if (at >= 0) kept.probes.splice(at, 1);
      if (this.closed || conn.closing || conn.socket.destroyed) return;
      const current = this.active.get(id);
      if (current === undefined && kept.endsPeer) {
        // The peer said it shuts down (or was dropped for misbehaving) on the other one.
        conn.closeReason = 'its other connection ended it';
        conn.end();
      } else if (current === undefined) {
        this.adopt(conn); // its other connections all went (a close hands its place on: onClosed)
      } else if (current.conn === conn) {
        return; // taken already (a third connection's decision)
      } else if (current.conn !== kept) {
        this.onDuplicate(conn, current); // a third one came meanwhile: decide against that one
      } else if (kept.retiredByPeer) {
        this.retire(this.switchTo(current, conn)); // the peer gave it up meanwhile
      } else if (probe.answered) {
        this.log.debug(`duplicate connection to ${conn.label}: keeping the existing one (#${kept.number})`);
        this.retire(conn);
      } else {
        this.drop(
          this.switchTo(current, conn),
          new ProtocolError(
            'ERR_PEER_TIMEOUT',
            `no answer to a ping since the peer connected again (waited ${Date.now() - sentAt} ms, silent for ${Date.now() - kept.lastSeen} ms)`,
          ),
        );
      }
    };
    const probe: Probe = { n: randomUint32(), answered: false, candidate: conn, settle };
    kept.probes.push(probe);
    kept.send({ type: 'ping', n: probe.n });
    const sentAt = Date.now();
    const { pingIntervalMs, peerTimeoutMs } = this.timing;
    // After I/O already waiting: a pong that came while this process stalled still counts. And a
    // connection heard from in the last interval is alive, its pong behind what the peer sent
    // before it: it gets another interval, up to the peer timeout, rather than being dropped as
    // dead. (In the last interval, not since the ping: bytes a dead peer sent before it went
    // would buy one interval, not the whole timeout.)
    let since = sentAt;
    const onTimer = (): void => {
      setImmediate(() => {
        if (settled) return;
        const now = Date.now();
        if (!probe.answered && kept.lastSeen >= since && now - sentAt + pingIntervalMs <= peerTimeoutMs) {
          since = now;
          timer = setTimeout(onTimer, pingIntervalMs).unref();
        } else {
          settle();
        }
      });
    };
    let timer = setTimeout(onTimer, pingIntervalMs).unref();
  }

  /** A connection whose hello came from a node that is not a peer yet: it becomes one, unless full. */
  private adopt(conn: Connection): void {
    const hello = conn.hello!;
    if (this.isFullFor(hello.id)) {
      // Rare: its slot was held from the end of its handshake (isFullFor), and a full node refuses
      // then, instead of its hello. Left for a slot that went to another node meanwhile (a probe that
      // settled after the peer's old connection closed).
      conn.send({ type: 'bye', reason: this.refuseFull(conn) });
      conn.end();
      return;
    }
    const info = this.infoOf(conn);
    const now = Date.now();
    const legacyNick = hello.seq === undefined; // see ActivePeer.legacyNick
    const [nickSeq, nickTs] = legacyNick ? [0, now] : [hello.seq, hello.ts ?? 0];
    this.active.set(hello.id, { conn, info, since: now, nickSeq, nickTs, legacyNick });
    this.log.info(`peer up: ${conn.label}`);
    this.publishPeers();
    this.events.next({ type: 'peer-up', peer: info });
    conn.send(this.peerListFor(conn));
    this.sendSync(conn, this.syncFrame());
    this.schedulePeerList();
    if (!conn.outbound) this.rememberInbound(conn);
  }

  /**
   * Stops using a duplicate connection. It is not closed here: the other side may still be using it
   * (it has not seen the connection we keep yet), so we tell it, and it closes this one as soon as it
   * has the other. Closing it ourselves would make the peer look gone for a moment.
   */
  private retire(conn: Connection): void {
    conn.send({ type: 'bye', reason: 'duplicate' });
    const timer = setTimeout(() => conn.end(), this.timing.helloTimeoutMs);
    timer.unref();
    conn.socket.once('close', () => clearTimeout(timer));
  }

  /** A `bye`: after the hello, the peer is closing; before it, the peer refuses us (it is full). */
  private onBye(conn: Connection, reason: string): void {
    const id = conn.peerId;
    if (reason === 'duplicate' && id !== undefined && this.active.get(id)?.conn === conn) {
      if (conn.retiredByPeer) return; // said again: its timer runs already (one per frame would pile up)
      conn.retiredByPeer = true;
      // The peer keeps another connection to us that we have not seen yet: go on using this one
      // until that one's hello arrives (onHello swaps and ends this), or give up after the hello timeout.
      const timer = setTimeout(() => {
        if (this.active.get(id)?.conn === conn) {
          conn.closeReason = 'duplicate connection, and the other one never came';
          conn.end();
        }
      }, this.timing.helloTimeoutMs);
      timer.unref();
      conn.socket.once('close', () => clearTimeout(timer));
      return;
    }
    conn.refused = reason === 'full';
    if (conn.hello === undefined) {
      // Refused before any hello: a failed dial, never a peer that came and went. A peer the user
      // named is worth a warning (shown in a terminal); a learned one is routine.
      conn.closeReason = `it refused the connection (${reason})`;
      conn.reasonLogged = true;
      const line = `${conn.label} refused the connection: ${reason}`;
      if (conn.dialed !== undefined && this.targets.get(conn.dialed)?.persistent === true)
        this.log.warn(line);
      else this.log.info(line);
    } else {
      conn.closeReason = reason === 'shutdown' ? 'it shut down' : `it closed the connection (${reason})`;
      conn.endsPeer = reason === 'shutdown';
    }
    conn.end();
  }

  /**
   * True when a new peer `remoteId` would be one too many (a second connection of a peer is not).
   * Counted with the peers: each node whose handshake ended and which was sent this node's hello, but
   * whose own hello has not come yet. It holds a slot until then (or until its connection closes, at
   * the latest at the hello timeout): it may have taken our hello for a welcome and reported us up,
   * and a `bye full` when its hello comes would make it report us down at once and back off.
   */
  private isFullFor(remoteId: string): boolean {
    if (remoteId === this.id || this.active.has(remoteId)) return false;
    return this.slotsTaken(remoteId) >= this.maxPeers;
  }

  /**
   * As many peers as it takes, slots held included (see {@link isFullFor}): a dial would end in this
   * node refusing the peer itself (`bye full`) at the end of the handshake.
   */
  private isFull(): boolean {
    return this.slotsTaken() >= this.maxPeers;
  }

  /**
   * The peers, and the other nodes (but `except`) that hold a slot until their hello comes: the
   * handshake ended and this node sent its hello (see {@link isFullFor}). The one count that
   * accepting, dialling and connect() go by. With `dials`, this node's dials in flight too, each
   * once: a dial's held slot is left to {@link dialsInFlight}, which counts it until its hello.
   */
  private slotsTaken(except?: string, dials = false): number {
    const held = new Set<string>();
    for (const conn of this.conns) {
      const id = conn.session?.remoteId;
      if (id === undefined || conn.hello !== undefined || conn.closing || (dials && conn.outbound)) continue;
      if (id !== except && id !== this.id && !this.active.has(id)) held.add(id);
    }
    return this.active.size + held.size + (dials ? this.dialsInFlight() : 0);
  }

  /** `maxPeers` in words: `1 peer`, `32 peers`. */
  private peerCount(): string {
    return this.maxPeers === 1 ? '1 peer' : `${this.maxPeers} peers`;
  }

  private refuseFull(conn: Connection): 'full' {
    const peers = this.peerCount();
    this.log.info(`refusing ${conn.label}: already ${peers}, or about to be (--max-peers)`);
    conn.closeReason = `refused: already ${peers}, or about to be`;
    conn.reasonLogged = true;
    return 'full';
  }

  /**
   * Of two connections to one peer, true when `conn` is the one to keep: the one dialled by the
   * node with the smaller id. When one node dialled both (it knew the peer at two addresses), the
   * one whose handshake hash is smaller: the hash is the same at both ends and differs per
   * connection, so both sides choose the same one whatever order their hellos came in.
   */
  private preferred(conn: Connection, other: Connection): boolean {
    const dialer = this.dialerOf(conn);
    const otherDialer = this.dialerOf(other);
    if (dialer !== otherDialer) return dialer < otherDialer;
    return Buffer.compare(conn.session!.handshakeHash, other.session!.handshakeHash) < 0;
  }

  private dialerOf(conn: Connection): string {
    return conn.outbound ? this.id : (conn.peerId ?? '');
  }

  private infoOf(conn: Connection): PeerInfo {
    const hello = conn.hello!;
    return {
      id: hello.id,
      nick: hello.nick,
      address: conn.listenAddress ?? conn.remoteSocketAddress,
      direction: conn.outbound ? 'out' : 'in',
    };
  }

  /**
   * A message that failed verification: dropped and counted against the peer that delivered it;
   * a peer that keeps doing it is disconnected. One line per peer for its first offence, so a
   * flood of forgeries cannot flood the log.
   */
  private invalidMessage(message: Inbound<ChatFrame>, reason: string): void {
    this.invalidMessages++;
    const conn = message.peer === null ? undefined : this.deliveredBy(message.peer);
    if (conn === undefined) return; // closed meanwhile: counted, nobody to charge
    conn.strikes++;
    if (conn.strikes === 1) this.log.warn(`${conn.label} relayed an invalid message (${reason}): dropped`);
    if (conn.strikes >= MAX_STRIKES) {
      this.drop(
        conn,
        new ProtocolError('ERR_BAD_SIGNATURE', `${conn.strikes} invalid messages, the last: ${reason}`),
      );
    }
  }

  /**
   * The open connection a frame carrying `ref` came in on: the peer's active one as a rule, but a
   * second connection of the peer (probed, or retired and not closed yet) carries frames too.
   */
  private deliveredBy(ref: PeerRef): Connection | undefined {
    const active = this.active.get(ref.id)?.conn;
    if (active?.delivered(ref) === true) return active;
    for (const conn of this.conns) if (conn.delivered(ref)) return conn;
    return undefined;
  }

  /** True at most once a minute per `key`: for log lines a peer could otherwise repeat at will. */
  private firstThisMinute(key: string): boolean {
    const now = Date.now();
    const last = this.limitedLog.get(key);
    if (last !== undefined && now - last < 60_000) return false;
    this.limitedLog.set(key, now);
    return true;
  }

  /**
   * Sends a chat message on `conn`. One that cannot go to that peer (a peer that does not read
   * binary frames, and the message's JSON is over the frame limit) is left out for it, logged once
   * per sender per minute.
   */
  private sendChat(conn: Connection, payload: Buffer, frame: HeldFrame): void {
    if (conn.sendPayload(payload, frame.id) || !this.firstThisMinute(`json:${frame.from}`)) return;
    this.log.warn(
      `not sending ${conn.label} a message of ${frame.from.slice(0, 8)} (${frame.nick}): as JSON (it does not read binary frames) it is over the frame limit`,
    );
  }

  /**
   * A message dropped because its sender is over its rate: counted, and logged once per sender per
   * minute (naming the sender and the peer that delivered it), so a flood cannot flood the log.
   */
  private overRate(message: Inbound<ChatFrame>): void {
    this.rateLimitedMessages++;
    this.overRateAt.set(message.frame.from, Date.now());
    const conn = message.peer === null ? undefined : this.active.get(message.peer.id)?.conn;
    if (conn !== undefined) this.resyncLater(conn);
    const { from, nick } = message.frame;
    if (!this.firstThisMinute(from)) return;
    const via = conn === undefined ? '' : ` (via ${conn.label})`;
    const { perSecond, burst } = this.limits.senderMessages;
    this.log.warn(
      `sender ${from.slice(0, 8)} (${nick}) is over ${perSecond} messages/s (burst ${burst})${via}: deferring its excess`,
    );
  }

  /**
   * Asks `conn` again, a little later, for what this node lacks: messages dropped over their
   * sender's rate are fetched again by the history resync, at the pace the rate allows, so an honest
   * backlog (a long paste, a resync after a partition) is delayed, never lost. One request per peer
   * at a time.
   */
  private resyncLater(conn: Connection): void {
    if (conn.resyncTimer !== undefined || conn.closing) return;
    conn.resyncTimer = setTimeout(() => {
      conn.resyncTimer = undefined;
      // No more than the sender's rate lets in by now: the rest would be dropped again.
      if (!conn.closing && this.active.get(conn.peerId ?? '')?.conn === conn)
        this.sendSync(conn, { ...this.syncFrame(), max: this.limits.senderMessages.burst });
    }, this.timing.rateResyncDelayMs);
    conn.resyncTimer.unref(); // cleared when the connection closes (Connection#destroy)
  }

  /** A bad peer or a failed socket: one log line naming the peer and the reason, then close it. */
  private drop(conn: Connection, err: Error): void {
    if (conn.closing) return;
    const code = err instanceof ProtocolError ? err.code : ((err as NodeJS.ErrnoException).code ?? 'ERR');
    const reason = `${code}: ${err.message}`;
    conn.closeReason = reason;
    conn.reasonLogged = true;
    const misbehaved =
      (err instanceof ProtocolError && err.code !== 'ERR_PEER_TIMEOUT' && err.code !== 'ERR_HELLO_TIMEOUT') ||
      err instanceof SecurityError;
    conn.endsPeer = misbehaved;
    if (misbehaved) {
      this.log.warn(`disconnecting ${conn.label}: ${reason}`);
    } else {
      this.log.info(`lost ${conn.label}: ${reason}`);
    }
    conn.destroy();
  }

  private onClosed(conn: Connection): void {
    this.conns.delete(conn);
    conn.destroy();
    const id = conn.peerId;
    let worked = false; // it was a peer, long enough to count as a link that worked
    const heir = conn.endsPeer
      ? undefined
      : conn.probes.find((p) => !p.candidate.closing && !p.candidate.socket.destroyed)?.candidate;
    if (id !== undefined && heir !== undefined && !this.closed && this.active.get(id)?.conn === conn) {
      // Closed while the peer's new connection waited on a probe of it: the new one takes its place
      // (its probe then finds it taken), and the peer never looks gone.
      this.log.debug(`${conn.label} closed (#${conn.number}): going on with #${heir.number}`);
      this.switchTo(this.active.get(id)!, heir);
      this.noteNews(); // frames on their way over the closed one are lost
    } else if (id !== undefined && this.active.get(id)?.conn === conn) {
      const { info, since } = this.active.get(id)!;
      // A link that lasted less than a ping interval did not work: a node that says hello and hangs
      // up (or keeps crashing) is dialled again with backoff, not at once with a peer-up each time.
      worked = Date.now() - since >= this.timing.pingIntervalMs;
      this.active.delete(id);
      const reason = conn.closeReason ?? (this.closed ? 'node closing' : 'connection closed');
      if (!this.closed && !conn.reasonLogged) this.log.info(`peer down: ${conn.label} (${reason})`);
      this.publishPeers();
      this.events.next({ type: 'peer-down', peer: info, reason });
      this.schedulePeerList();
      // Frames on their way over it are lost, and peers that counted on it relaying are not told yet.
      this.noteNews();
      // A slot is free: the addresses left waiting while the node was full are dialled now (the
      // slots held for handshakes count, see slotsTaken).
      if (!this.closed && this.slotsTaken() === this.maxPeers - 1) setImmediate(() => this.dialIdle());
    }
    // Probes of this connection: another connection of its peer may take its place now.
    for (const probe of conn.probes.splice(0)) setImmediate(probe.settle);
    // Probes for this connection (it was the new one): settled now, their timers cleared; a close
    // would only have been found when the timer fired.
    for (const kept of this.conns) {
      for (const probe of [...kept.probes]) if (probe.candidate === conn) probe.settle();
    }
    if (this.closed) return;
    // Its handshake ended but its hello never came: the slot it held is free (see isFullFor), and
    // the addresses left waiting while the node was full are dialled now, as when a peer leaves.
    if (conn.session !== undefined && conn.hello === undefined && this.slotsTaken() === this.maxPeers - 1)
      setImmediate(() => this.dialIdle());
    const dialedTarget = conn.dialed === undefined ? undefined : this.targets.get(conn.dialed);
    if (dialedTarget !== undefined && conn.hello === undefined) dialedTarget.dialing = false;
    // Dial again whatever this connection stood for, unless the node is reachable another way.
    for (const target of this.targets.values()) {
      const related = target.addr === conn.dialed || (id !== undefined && target.nodeId === id);
      if (!related || target.dialing || target.timer !== undefined) continue;
      if (this.reached(target)) continue;
      if (worked && !conn.refused) {
        target.attempts = 0;
        this.schedule(target);
      } else this.failed(target);
    }
  }

  // ---- history resync ----------------------------------------------------------------------

  /**
   * What this node holds, for a peer to send what it lacks: per sender (the most recent ones,
   * bounded) the mark and the ranges held above it. With `minAgeMs`, the peer leaves out what it
   * took in that recently.
   */
  private syncFrame(minAgeMs?: number, busy = false): SyncFrame {
    // Most recent senders first, until the frame would pass half the frame limit (a peer's limit
    // is the default one, or ours if smaller): ranges make marks of very different sizes.
    const budget = Math.min(this.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES) / 2;
    const all = [...this.store.marks()];
    const marks: SyncMark[] = [];
    let bytes = 64;
    for (let i = all.length - 1; i >= 0 && marks.length < MAX_SYNC_MARKS; i--) {
      const [from, seq] = all[i]!;
      const have = this.store.heldAbove(from, seq, MAX_SYNC_RANGES);
      const mark: SyncMark = have.length === 0 ? { from, seq } : { from, seq, have };
      bytes += JSON.stringify(mark).length + 1;
      if (bytes > budget) break;
      marks.push(mark);
    }
    marks.reverse();
    return {
      type: 'sync',
      marks,
      // Nothing older than this node takes in: a sender it forgot as stale (or never knew) is not
      // in `marks`, and its old messages would come at every sync, to be refused.
      since: Math.max(0, Date.now() - this.historyMaxAgeMs),
      ...(minAgeMs === undefined ? {} : { minAgeMs }),
      ...(busy ? { busy } : {}),
    };
  }

  /**
   * Says once, at start, that the history holds messages longer than `maxFrameBytes`: a run with a
   * larger limit took them in (this one's decoder refuses a longer frame, and `send` a longer text).
   * They are kept, shown by `history()` and sent again by a run whose limit they fit; this one
   * leaves them out of every resync (see {@link resync}), since no frame of it can carry one. Kept
   * rather than dropped at load: the start's compaction would erase them from the log for good.
   */
  private noteLongerThanFrames(): void {
    const { count, longest } = this.store.longerThan(this.maxFrameBytes);
    if (count === 0) return;
    const held =
      count === 1
        ? `1 message held (of ${longest} bytes) is`
        : `${count} messages held (the longest ${longest} bytes) are`;
    this.log.warn(
      `history: ${held} over maxFrameBytes (${this.maxFrameBytes}), from a run with a larger limit: kept and shown, never sent to peers while the limit is lower (peers get them from nodes whose limit they fit)`,
    );
  }

  /** Sends a sync on `conn`, saying how many frames this node has read on it (see {@link resync}). */
  private sendSync(conn: Connection, sync: SyncFrame): void {
    conn.send({ ...sync, rx: conn.rxFrames });
  }

  /** New messages (received or sent), or a peer left: a sync with every peer is due (anti-entropy). */
  private noteNews(): void {
    const now = Date.now();
    if (this.entropySince === undefined) this.entropySince = now;
    this.lastNews = now;
    this.armEntropy(this.timing.antiEntropyMs);
  }

  private armEntropy(delay: number): void {
    if (this.entropyTimer !== undefined || this.closed) return;
    this.entropyTimer = setTimeout(() => this.antiEntropy(), delay);
    this.entropyTimer.unref();
  }

  /**
   * Asks every peer for what this node lacks, once news has stopped for a period (a burst is over:
   * what is missing now is lost, not on its way), or every ten periods while it goes on (`busy`:
   * then only what fills gaps, since the rest is likely on its way). Peers leave out what they took in
   * during the last half period, what the marks' ranges say is held, and what they wrote on the link
   * after the frames this node had read (`rx`); each asks back ({@link answerEntropySync}), so a peer
   * that missed a message fetches it too.
   */
  private antiEntropy(): void {
    this.entropyTimer = undefined;
    if (this.entropySince === undefined || this.closed) return;
    const period = this.timing.antiEntropyMs;
    const now = Date.now();
    const quietAt = this.lastNews + period;
    if (now < quietAt && now - this.entropySince < 10 * period) {
      this.armEntropy(quietAt - now);
      return;
    }
    const busy = this.busy(now);
    this.entropySince = busy ? now : undefined;
    const sync = this.syncFrame(Math.floor(period / 2), busy);
    for (const { conn } of this.active.values()) this.sendSync(conn, sync);
    if (this.entropySince !== undefined) this.armEntropy(quietAt - now);
  }

  /**
   * A message of `frame`'s sender is missing below it (delivered by `via`): unless one is watched
   * already, it is asked for if still missing {@link NodeTiming.gapRepairMs} from now. One at a time:
   * when the watched one turns up, another hole that opened meanwhile is watched next (see
   * {@link repairGap}), and each sync asks for every hole it has room for.
   */
  private noteGap(frame: ChatFrame, via: string): void {
    if (this.gapTimer !== undefined || this.closed || this.holesLeftAlone(frame.from, Date.now())) return;
    this.watchGap({ from: frame.from, seq: frame.seq - 1 }, via);
  }

  /**
   * Whether gap repair leaves this sender's holes alone now: this node's own (they come back by
   * resync only), a sender whose excess over its rate was dropped lately (the rate's own resync
   * fetches that, at the pace the rate allows), and one whose hole no peer had when every peer was
   * asked, within the last {@link GAP_COOLDOWN_PERIODS} periods (a sender that skips sequence
   * numbers, or one whose messages every peer has evicted, would cost a sync every period).
   */
  private holesLeftAlone(from: string, now: number): boolean {
    if (from === this.id) return true;
    const limited = this.overRateAt.get(from);
    if (limited !== undefined && now - limited < this.timing.rateResyncDelayMs) return true;
    const givenUp = this.gapGivenUp.get(from);
    return givenUp !== undefined && now - givenUp < GAP_COOLDOWN_PERIODS * this.timing.gapRepairMs;
  }

  /** The first hole of a sender whose holes are not left alone, if there is one. */
  private nextHole(now: number): { readonly from: string; readonly seq: number } | undefined {
    return this.store.firstHole((from) => this.holesLeftAlone(from, now));
  }

  /** Watches {@link nextHole}, if there is one. */
  private watchNextHole(via: string, now: number): void {
    const hole = this.nextHole(now);
    if (hole !== undefined) this.watchGap(hole, via);
  }

  private watchGap(
    hole: { readonly from: string; readonly seq: number },
    via: string,
    asked: 0 | 1 | 2 = 0,
  ): void {
    this.gap = { from: hole.from, seq: hole.seq, via, asked };
    this.gapTimer = setTimeout(() => this.repairGap(), this.timing.gapRepairMs);
    this.gapTimer.unref();
  }

  /**
   * A period after the watch began. Still missing: a sync (busy: only holes are sent, not the tail,
   * which is on its way) to the peer that delivered the message after it, which most likely has it;
   * a period later, if still missing, to every peer; a period after that, if still missing, the
   * sender's holes are left to anti-entropy for a while ({@link holesLeftAlone}). Peers leave out
   * what they took in during the last period and what is on its way to this node. Turned up: the
   * next hole, if any, is watched, or asked for at once when this one came in answer.
   */
  private repairGap(): void {
    this.gapTimer = undefined;
    let gap = this.gap;
    this.gap = undefined;
    if (gap === undefined || this.closed) return;
    const now = Date.now();
    if (this.holesLeftAlone(gap.from, now)) {
      this.watchNextHole(gap.via, now);
      return;
    }
    if (this.store.knows(gap)) {
      const hole = this.nextHole(now);
      if (hole === undefined) return;
      // It turned up. A hole noticed meanwhile was not watched: watched now; or, if this one came
      // when asked for, part of a run that a relay skipped, whose rest the peer asked held back as
      // too recent then: asked for at once.
      if (gap.asked === 0) {
        this.watchGap(hole, gap.via);
        return;
      }
      gap = { from: hole.from, seq: hole.seq, via: gap.via, asked: 0 };
    } else if (gap.asked === 2) {
      // Every peer was asked a period ago, and none had it. A hole of another sender may have
      // opened meanwhile, unwatched (one watch at a time).
      this.gapGivenUp.set(gap.from, now);
      this.watchNextHole(gap.via, now);
      return;
    }
    const sync = this.syncFrame(this.timing.gapRepairMs, true);
    const first = gap.asked === 0 ? this.active.get(gap.via)?.conn : undefined;
    if (first !== undefined) this.sendSync(first, sync);
    else for (const { conn } of this.active.values()) this.sendSync(conn, sync);
    this.gapRepairs++;
    this.log.debug(
      `gap repair: ${gap.from.slice(0, 8)}'s message ${gap.seq} still missing: asking ${first?.label ?? 'every peer'}`,
    );
    this.watchGap(gap, gap.via, first !== undefined ? 1 : 2);
  }

  /**
   * A peer's anti-entropy sync is answered with ours, at most once a period per peer: the peer that
   * had news asks, and the one that missed it (it may have had no news at all) asks back. Only the
   * answers are limited, not by our own periodic syncs: ours may have gone out before the message
   * it now lacks was old enough to be sent. An exchange ends after at most one answer each way.
   */
  private answerEntropySync(conn: Connection): void {
    const now = Date.now();
    if (now - conn.lastEntropyAnswer < this.timing.antiEntropyMs) return;
    conn.lastEntropyAnswer = now;
    this.sendSync(conn, this.syncFrame(Math.floor(this.timing.antiEntropyMs / 2), this.busy(now)));
  }

  /** News came within the last anti-entropy period: a burst goes on (a sync then says `busy`). */
  private busy(now: number): boolean {
    return this.entropySince !== undefined && now < this.lastNews + this.timing.antiEntropyMs;
  }

  /** A peer's sync, within its rate (Connection#takeSync): what it lacks, and our own if it asks. */
  private answerSync(conn: Connection, sync: SyncFrame): void {
    this.resync(conn, sync);
    if (sync.minAgeMs !== undefined) this.answerEntropySync(conn);
  }

  /**
   * Sends a peer the messages of our window it lacks, as ordinary chat frames, in bounded batches:
   * a batch per turn of the event loop and never more than RESYNC_OUTBOX_BYTES queued, so live
   * traffic to this and every other peer goes on in between. A message kept unchecked is checked
   * before it goes. One backlog per peer: a newer sync's takes the place of what is left of an
   * older one's, joined to what of that rest the newer marks say the peer still lacks, whatever the
   * newer sync's filters (a gap repair's `busy` and `minAgeMs` must not cut a joining peer's history
   * short); what was written meanwhile is in flight, left out by `rx`. So a peer never gets a
   * message twice from two syncs, nor holds this node to several backlogs at once.
   */
  private resync(conn: Connection, sync: SyncFrame): void {
    const marks = new Map(sync.marks.map((m) => [m.from, m.seq]));
    // A peer's mark for this node's own id is not taken as our counter: sync frames are unsigned, and
    // a forged mark near 2^53 would stop this node from sending. Own messages a peer hands back are
    // signed, and raise the counter as they are held.
    const have = new Map(sync.marks.flatMap((m) => (m.have === undefined ? [] : [[m.from, m.have]])));
    const takenBy = sync.minAgeMs === undefined ? undefined : Date.now() - sync.minAgeMs;
    // What this node wrote on the link after the frames the peer had read is on its way: not again.
    // (In a long burst a peer falls seconds behind; `minAgeMs` alone would send its backlog twice.)
    const lacking = this.store.lacking(marks, {
      have,
      ...(takenBy === undefined ? {} : { takenBy }),
      // Busy: the tail is on its way, unless it is old (then it was missed: a quiet sender's last
      // message in a chat that never pauses).
      ...(sync.busy === true
        ? { tailTakenBy: Date.now() - BUSY_TAIL_PERIODS * this.timing.antiEntropyMs }
        : {}),
      ...(sync.since === undefined ? {} : { since: sync.since }),
    });
    if (lacking.length === 0) return; // the usual answer: nothing (the ring is not walked)
    const flying = sync.rx === undefined ? undefined : conn.inFlight(sync.rx);
    let tooLong = 0;
    let backlog = lacking
      .filter((m) => {
        if (flying !== undefined && flying.has(m.frame.id)) return false;
        // Held from a run with a larger maxFrameBytes (said once, at start): no frame of this node
        // can carry it. Checked here, before it is encoded: a frame over the limit that reaches
        // Connection#write is a bug, and throws.
        if (m.payload.length <= this.maxFrameBytes) return true;
        tooLong++;
        return false;
      })
      .slice(0, sync.max);
    if (tooLong > 0) {
      this.log.debug(
        `resync: leaving out ${tooLong} held message${tooLong === 1 ? '' : 's'} over maxFrameBytes for ${conn.label}`,
      );
    }
    if (backlog.length === 0) return;
    // What the older backlog has not sent yet and the peer still lacks by these marks goes on, even
    // where this sync's own filters (minAgeMs, busy, max, since) would leave it out.
    const prev = conn.resync;
    if (prev !== undefined && prev.next < prev.backlog.length) {
      const ids = new Set(backlog.map((m) => m.frame.id));
      const carried = prev.backlog.slice(prev.next).filter((m) => {
        const { from, seq, id } = m.frame;
        if (ids.has(id) || flying?.has(id) === true || seq <= (marks.get(from) ?? 0)) return false;
        return !(have.get(from) ?? []).some(([first, last]) => seq >= first && seq <= last);
      });
      if (carried.length > 0) backlog = [...carried, ...backlog];
    }
    this.log.debug(`resync: sending ${backlog.length} messages to ${conn.label}`);
    const state = { backlog, next: 0, ready: false };
    conn.resync = state;
    // The backlog may hold messages of this turn whose records are not written yet: none leaves
    // before it is on disk.
    this.store.afterWrite(() => {
      state.ready = true;
      this.pumpResync(conn);
    });
  }

  /**
   * Sends a batch of the peer's resync backlog (see resync), and schedules the next turn while some
   * is left. One turn at a time per connection; a backlog not yet on disk waits for its write.
   */
  private pumpResync(conn: Connection): void {
    const state = conn.resync;
    if (state === undefined || !state.ready || conn.resyncTurn !== undefined || conn.resyncWait !== undefined)
      return;
    if (this.closed || conn.closing || conn.socket.destroyed) return;
    const { backlog } = state;
    let sent = 0;
    while (state.next < backlog.length && sent < RESYNC_BATCH && conn.outboxBytes < RESYNC_OUTBOX_BYTES) {
      const message = backlog[state.next++]!;
      if (!message.verified) {
        // The store keeps no signature: checked on the payload, as the peer will check it.
        const frame = parseFrame(message.payload);
        const problem =
          frame.type === 'chat' ? this.chatProblem(frame, message.payload) : 'not a chat message';
        if (problem !== undefined) {
          this.log.warn(
            `resync: not sending a held message of ${message.frame.from.slice(0, 8)} (${problem})`,
          );
          continue;
        }
        message.verified = true;
      }
      this.sendChat(conn, message.payload, message.frame);
      sent++;
    }
    if (state.next >= backlog.length) {
      conn.resync = undefined;
      return;
    }
    const again = (): void => {
      conn.resyncTurn = undefined;
      conn.resyncWait = undefined;
      this.pumpResync(conn);
    };
    // Kept on the connection, which clears them when it closes (Connection#destroy).
    if (sent > 0) conn.resyncTurn = setImmediate(again);
    else conn.resyncWait = setTimeout(again, RESYNC_WAIT_MS).unref(); // the peer is still draining the last batch
  }

  // ---- dialling ----------------------------------------------------------------------------

  private learn(entry: PeerEntry, source: string | undefined): void {
    if (this.active.has(entry.id) || this.selfAddrs.has(entry.addr)) return;
    let target = this.targets.get(entry.addr);
    if (target === undefined) {
      target = newTarget(entry.addr, parseAddress(entry.addr), false, entry.id, source);
      if (!this.addLearned(target)) return;
      this.log.debug(`learned ${entry.id.slice(0, 8)} at ${entry.addr}`);
    } else if (this.reached(target)) {
      // A connected peer's address: its handshake proved who is there, and a list naming another
      // node at it (a peer that restarted as a new node, or a lie) would have it dialled again.
      return;
    } else if (!target.idProven && !target.persistent) target.nodeId = entry.id;
    if (!target.dialing && target.timer === undefined) this.dialNow(target);
  }

  /**
   * An inbound peer's listen address is worth redialling if the link breaks. Its verified hello
   * proves who the peer is, not that it listens there (any identity can name any address): the
   * address stays unproven, counted against that peer's share like the addresses its lists name,
   * until a dial of it finds a node (onHello). Its word does tell who is there while it is
   * connected, so the address is not dialled then (reached).
   */
  private rememberInbound(conn: Connection): void {
    const addr = conn.listenAddress;
    if (addr === undefined) return;
    const known = this.targets.get(addr);
    if (known !== undefined) {
      // The node's own word over a list's; an address the user gave takes an id from a dial only.
      if (!known.idProven && !known.persistent) {
        known.nodeId = conn.peerId;
        known.idProven = true;
      }
      return;
    }
    try {
      const target = newTarget(addr, parseAddress(addr), false, conn.peerId, conn.peerId);
      target.idProven = true;
      this.addLearned(target);
    } catch (err) {
      // An address we cannot parse is one we cannot dial; the hello check already logged it.
      if (!(err instanceof AddressError)) throw err;
    }
  }

  /**
   * Keeps a learned address, within {@link NodeLimits.maxLearnedAddresses}. Only idle ones (not
   * being dialled, their node not connected) make room, the least recently learned first. A peer's
   * unproven addresses take at most a quarter of the table: past that, a new one from it takes the
   * place of its oldest. When the table is full, an unproven one goes; a proven one goes only for a
   * new proven one, never for an address a peer list or an inbound peer's hello named, so neither a
   * flood of lists nor many identities each naming an address can push out the nodes this one has
   * dialled. False when nothing may make room: the new one is not kept.
   */
  private addLearned(target: Target): boolean {
    const max = this.limits.maxLearnedAddresses;
    const share = Math.max(1, Math.floor(max / 4));
    const ofSource = target.proven ? undefined : target.source;
    let learned = 0;
    let sourceHolds = 0;
    let oldestOfSource: Target | undefined;
    let oldestUnproven: Target | undefined;
    let oldestProven: Target | undefined;
    for (const t of this.targets.values()) {
      if (t.persistent) continue;
      learned++;
      const mine = ofSource !== undefined && !t.proven && t.source === ofSource;
      if (mine) sourceHolds++;
      if (t.dialing || this.reached(t)) continue;
      if (mine) oldestOfSource ??= t;
      if (t.proven) oldestProven ??= t;
      else oldestUnproven ??= t;
    }
    let room: Target | undefined;
    if (sourceHolds >= share) room = oldestOfSource;
    else if (learned >= max) room = oldestUnproven ?? (target.proven ? oldestProven : undefined);
    else room = target;
    if (room === undefined) return false;
    if (room !== target) {
      this.log.debug(`forgetting ${room.addr} to make room for ${target.addr} (learned address table)`);
      this.forget(room);
    }
    this.targets.set(target.addr, target);
    return true;
  }

  /** Whether the node proven to be at `target` is a peer now (a peer list's word does not count). */
  private reached(target: Target): boolean {
    return target.idProven && target.nodeId !== undefined && this.active.has(target.nodeId);
  }

  private wantsDial(target: Target): boolean {
    if (this.closed || target.dialing) return false;
    if (this.reached(target)) return false;
    // Dialled again once a peer leaves (onClosed, upkeep).
    if (this.isFull() && !this.dialTakesNoSlot(target)) return false;
    if (target.persistent) return true;
    return this.slotsTaken(undefined, true) < this.targetPeers;
  }

  /**
   * A dial of an address the user gave whose unproven id hint names a peer (its hello named the
   * address as its own): were the hint true, the dial would find a peer already connected and take
   * no slot, so a full node makes it too, to learn who is there. Were it a lie, the node there is
   * refused as full at the end of the handshake.
   */
  private dialTakesNoSlot(target: Target): boolean {
    return (
      target.persistent && !target.idProven && target.nodeId !== undefined && this.active.has(target.nodeId)
    );
  }

  /** Dials the known addresses that wait for nothing (no backoff, no dial in flight) and are wanted. */
  private dialIdle(): void {
    if (this.closed || this.isFull()) return; // for each of them (wantsDial), and dialling fills no slot
    for (const target of this.targets.values()) {
      if (target.timer === undefined && !target.dialing && this.wantsDial(target)) this.dialNow(target);
    }
  }

  private dialsInFlight(): number {
    let n = 0;
    for (const t of this.targets.values()) if (t.dialing) n++;
    return n;
  }

  private dialNow(target: Target): void {
    clearTimeout(target.timer);
    target.timer = undefined;
    if (!this.wantsDial(target)) return;
    if (this.dialsInFlight() >= this.limits.maxDials) {
      // Wait for a turn: try again shortly, without counting it as a failed attempt.
      target.timer = setTimeout(
        () => {
          target.timer = undefined;
          this.dialNow(target);
        },
        backoffDelay(0, this.timing.backoff),
      );
      target.timer.unref();
      return;
    }
    target.dialing = true;
    const socket = netConnect({ host: target.address.host, port: target.address.port });
    this.dialSockets.add(socket);
    const timer = setTimeout(
      () => socket.destroy(new Error('connect timed out')),
      this.timing.connectTimeoutMs,
    );
    timer.unref();
    // Destroyed without an error (close() ends dials in flight) it emits neither error nor connect.
    socket.once('close', () => {
      clearTimeout(timer);
      this.dialSockets.delete(socket);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      this.dialSockets.delete(socket);
      target.dialing = false;
      this.log.debug(`cannot reach ${target.addr}: ${err.code ?? err.message}`);
      if (!this.closed) this.failed(target);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      clearTimeout(timer);
      this.dialSockets.delete(socket);
      socket.off('error', onError);
      // Still "dialling" until the hello (onHello) or the close (onClosed): a connection in its
      // handshake must not be dialled again.
      if (this.closed) {
        target.dialing = false;
        socket.destroy();
        return;
      }
      this.attach(socket, true, target.addr);
    });
  }

  private failed(target: Target): void {
    target.attempts++;
    if (!target.persistent && target.attempts >= this.learnedDialAttempts) {
      this.log.debug(`forgetting ${target.addr}: unreachable after ${target.attempts} attempts`);
      this.forget(target);
      return;
    }
    this.schedule(target);
  }

  private schedule(target: Target): void {
    clearTimeout(target.timer);
    const delay = backoffDelay(target.attempts, this.timing.backoff);
    target.timer = setTimeout(() => {
      target.timer = undefined;
      this.dialNow(target);
    }, delay);
    target.timer.unref();
  }

  private forget(target: Target): void {
    clearTimeout(target.timer);
    this.targets.delete(target.addr);
  }

  // ---- peer table ----------------------------------------------------------------------------

  /**
   * A connected peer's newer message under another nickname (it ran /nick since its hello): the
   * peer table takes that name. Signed by the peer, so nobody else can rename it.
   */
  private noteNick(frame: ChatFrame): void {
    const peer = this.active.get(frame.from);
    if (peer === undefined) return;
    if (peer.legacyNick) {
      // Its clock against ours at its hello (see legacyNick).
      if (frame.ts <= peer.nickTs) return;
      peer.nickTs = frame.ts;
    } else {
      // Sent after its messages below `seq`, and after hellos that said less (see nickSeq).
      if (frame.seq <= peer.nickSeq) return;
      peer.nickSeq = frame.seq;
      peer.nickTs = -1;
    }
    if (peer.info.nick === frame.nick) return;
    peer.info = { ...peer.info, nick: frame.nick };
    // peers$ only: who is linked to whom is the same, so the relay keeps its last targets (a new
    // version or id list would have them walked out again, at each message of a peer that renames
    // itself each time).
    this.peerList.next([...this.active.values()].map((p) => p.info));
  }

  /** The peer table changed (a peer up, down, or on a new connection): peers$, and the relay's view. */
  private publishPeers(): void {
    this.neighbourVersion++;
    const infos = [...this.active.values()].map((p) => p.info);
    this.peerList.next(infos);
    this.peerIds.next(infos.map((p) => p.id));
  }

  /**
   * The peers to tell `recipient` about: every other connected peer at an address it can use, as
   * many as {@link MAX_PEERS_PER_LIST} and the frame limit let in (with a small `maxFrameBytes`, 64
   * long host names do not fit: those left out are a hint lost, which only has the relay send more
   * copies).
   */
  private peerListFor(recipient: Connection): PeersFrame {
    const peers: PeerEntry[] = [];
    let bytes = EMPTY_PEER_LIST_BYTES;
    for (const { conn } of this.active.values()) {
      if (conn === recipient || peers.length >= MAX_PEERS_PER_LIST) continue;
      const addr = conn.listenAddress;
      if (addr === undefined) continue;
      const entry = { id: conn.peerId!, addr: this.localize(addr, recipient) };
      // The entry and its comma (one too many for the first: a byte to spare). One that does not fit
      // is left out, and a shorter one after it may still go.
      const entryBytes = Buffer.byteLength(JSON.stringify(entry), 'utf8') + 1;
      if (bytes + entryBytes > this.maxFrameBytes) continue;
      bytes += entryBytes;
      peers.push(entry);
    }
    return { type: 'peers', peers };
  }

  /**
   * A loopback address means "this host". Told to a peer on another host, it must become the address
   * that peer reaches this host at, or the peer would dial itself.
   */
  private localize(addr: string, recipient: Connection): string {
    const parsed = parseAddress(addr);
    if (!isLoopback(parsed.host) || isLoopback(recipient.remoteHost)) return addr;
    return formatAddress({ host: recipient.localHost, port: parsed.port });
  }

  private schedulePeerList(): void {
    if (this.peerListTimer !== undefined || this.closed) return;
    this.peerListTimer = setTimeout(() => {
      this.peerListTimer = undefined;
      for (const { conn } of this.active.values()) conn.send(this.peerListFor(conn));
    }, this.timing.peerListDelayMs);
    this.peerListTimer.unref();
  }

  /**
   * Keeps links alive and dials known nodes while below the target degree. A peer not heard from
   * for half a tick is pinged (it answers with a pong); a peer this node sent nothing since the last
   * tick is sent a pong unasked (never answered), so that it hears from this node even when traffic
   * goes one way only. A link that carries traffic both ways needs neither: each frame woke both
   * processes. A peer silent for `peerTimeoutMs` is dropped, except on a tick that comes late: then
   * this process stalled, and what the peers sent meanwhile is still waiting to be read.
   */
  private upkeep(): void {
    const now = Date.now();
    const late = now - this.lastUpkeep > 2 * this.timing.pingIntervalMs;
    this.lastUpkeep = now;
    const n = (this.pingNonce = (this.pingNonce + 1) >>> 0);
    const ping: Frame = { type: 'ping', n };
    const keepalive: Frame = { type: 'pong', n };
    for (const conn of this.conns) {
      if (conn.hello === undefined || conn.closing) continue;
      const silent = now - conn.lastSeen;
      if (silent > this.timing.peerTimeoutMs && !late) {
        this.drop(conn, new ProtocolError('ERR_PEER_TIMEOUT', `silent for ${silent} ms`));
        continue;
      }
      if (silent >= this.timing.pingIntervalMs / 2) conn.send(ping);
      else if (conn.framesSent === conn.sentAtUpkeep) conn.send(keepalive);
      conn.sentAtUpkeep = conn.framesSent;
    }
    this.dialIdle();
    this.store.retryWrite();
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    clearInterval(this.tick);
    clearTimeout(this.peerListTimer);
    clearTimeout(this.entropyTimer);
    clearTimeout(this.gapTimer);
    for (const target of this.targets.values()) clearTimeout(target.timer);
    // Dials not connected yet: their error handler sees this.closed; their close clears their timer.
    const closedDials = [...this.dialSockets].map(
      (socket) =>
        new Promise<void>((resolve) => {
          socket.once('close', () => resolve());
          socket.destroy();
        }),
    );
    const closedSockets = [...this.conns].map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.socket.destroyed) resolve();
          else conn.socket.once('close', () => resolve());
          if (conn.hello !== undefined) conn.send({ type: 'bye', reason: 'shutdown' });
          conn.end(500);
        }),
    );
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await Promise.all([...closedDials, ...closedSockets, serverClosed]);
    this.subscription.unsubscribe();
    this.store.close();
    this.releaseDataDir();
    this.local$.complete();
    this.connections$.complete();
    this.events.complete();
    this.peerList.complete();
    this.peerIds.complete();
  }
}

/**
 * Invalid messages a peer may relay before it is disconnected. Every node verifies before it relays,
 * so an honest peer relays none; three rather than one so a single corrupted record (a bug, a bad
 * disk) does not cut a link at once.
 */
const MAX_STRIKES = 3;

/**
 * Probes pending on one connection at most (see probeThenRetire): a peer connects again a few times
 * in a row at most; beyond, a new connection of it is retired without one.
 */
const MAX_PROBES = 4;

/** Addresses remembered as this node's own; more are rare (a host's names and addresses). */
const MAX_SELF_ADDRS = 256;

/**
 * Connections in their handshake at once. 64: a handshake takes about 1 ms of CPU, so 64 is far
 * more than honest peers ever open together, and bounds what a connection flood can hold. One more
 * inbound closes an inbound one still before its hello, the oldest that sent nothing first (see
 * shedOldestPending).
 */
const MAX_PENDING_HANDSHAKES = 64;
/**
 * Gap repair periods during which a sender's holes are left to anti-entropy after every peer was
 * asked for one and none had it: two rounds per 10 s at most (at the default 500 ms) for a sender
 * that skips sequence numbers, instead of two per second.
 */
const GAP_COOLDOWN_PERIODS = 20;
/** A busy peer is sent messages above its highest held only once they are this many anti-entropy periods old. */
const BUSY_TAIL_PERIODS = 5;
/**
 * New connections accepted per remote host: 20 at once, then 5 per second, so a flood from one
 * address is cut while a NAT'd office starting together is not. Loopback is exempt.
 */
const ACCEPT_RATE = { burst: 20, perSecond: 5 } as const;

/**
 * Messages sent together that one signature covers (the protocol allows up to MAX_BATCH). 64: a
 * proof of six hashes (256 characters) instead of up to ten (427) in every frame, which every node
 * encrypts, parses and hashes, and the batch's objects are done with before the next is made; one
 * more signature, and one more check at each node, per 64 messages.
 */
const SIGN_BATCH = 64;

/** Messages per resync batch, and the most bytes queued for a peer before the next batch waits. */
const RESYNC_BATCH = 256;
const RESYNC_OUTBOX_BYTES = 1024 * 1024;
/** Wait before the next batch of a resync while the last ones are still queued (the peer drains them). */
const RESYNC_WAIT_MS = 10;

/** Random bytes for message ids, drawn 256 ids at a time: one getrandom call instead of one per message. */
let idPool = Buffer.alloc(0);
let idOffset = 0;
const ID_BYTES = 12;
/** Characters of a message id: {@link ID_BYTES} in base64url. */
const MESSAGE_ID_LENGTH = Math.ceil((ID_BYTES * 4) / 3);
/**
 * Bytes of the longest chat frame a node signs: the longest nick and text at 3 bytes of UTF-8 per
 * UTF-16 unit, the longest wire id, a proof path for a batch of {@link SIGN_BATCH}.
 */
const LONGEST_CHAT_FRAME = binaryChatBytes(
  MESSAGE_ID_LENGTH,
  3 * MAX_NICK_LENGTH,
  3 * MAX_TEXT_LENGTH,
  64,
  PATH_HASH_BYTES * Math.ceil(Math.log2(SIGN_BATCH)),
);
/** Bytes of a peer list without entries. */
const EMPTY_PEER_LIST_BYTES = Buffer.byteLength(JSON.stringify({ type: 'peers', peers: [] }), 'utf8');

/** A fresh message id: 96 random bits, 16 base64url characters. */
function messageId(): string {
  if (idOffset + ID_BYTES > idPool.length) {
    idPool = randomBytes(ID_BYTES * 256);
    idOffset = 0;
  }
  // base64urlSlice, not toString: Buffer#toString walks its encoding switch in JavaScript.
  const id = (idPool as SlicingBuffer).base64urlSlice(idOffset, idOffset + ID_BYTES);
  idOffset += ID_BYTES;
  return id;
}

function newTarget(
  addr: string,
  address: Address,
  persistent: boolean,
  nodeId: string | undefined,
  source?: string,
): Target {
  return {
    addr,
    address,
    persistent,
    nodeId,
    idProven: false,
    idDialled: false,
    attempts: 0,
    timer: undefined,
    dialing: false,
    proven: false,
    source,
  };
}

/** A message as `messages$` and `history()` give it: the fields the history keeps. */
const toMessage: (frame: HeldFrame) => ChatMessage = heldFrame;

function isChat(m: Inbound): m is Inbound<ChatFrame> {
  return m.frame.type === 'chat';
}

/** The message itself when it is a peer list (for filterMap), else undefined. */
function peersOnly(m: Inbound): Inbound<PeersFrame> | undefined {
  return m.frame.type === 'peers' ? (m as Inbound<PeersFrame>) : undefined;
}
