import { Buffer, constants } from 'node:buffer';
import {
  closeSync,
  existsSync,
  fstatSync,
  fsync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
  writev,
  writevSync,
} from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { DEFAULT_MAX_FRAME_BYTES, getUint32, putUint32 } from '../protocol/codec.js';
import { parseFrame, type ChatFrame } from '../protocol/frames.js';
import { ProtocolError } from '../protocol/errors.js';
import { openIfExists, readAt } from '../util/fs.js';

/** How much history a node keeps. Every default carries its reason. */
export interface HistoryWindow {
  /** Most messages kept. Default 10,000: days of a busy group chat, about 2-3 MB on disk and in memory. */
  readonly maxMessages?: number;
  /**
   * Oldest message kept, by its timestamp, and the oldest taken in at all. Default 7 days: a laptop
   * closed over a long weekend still catches up. A node takes at least {@link MIN_HISTORY_AGE_MS}.
   */
  readonly maxAgeMs?: number;
}

export const HISTORY_DEFAULTS = { maxMessages: 10_000, maxAgeMs: 7 * 24 * 3600_000 } as const;

/**
 * The most messages a node keeps (`createNode`'s `history.maxMessages`, `--history`): 1,000,000,
 * 100 times the default. Every message held is in memory (its payload and what is shown of it, about
 * 1 KB), and the log holds about twice the window before it is compacted (more while compactions
 * fail), all of it read at start: a larger window is more memory and a slower start than a chat's
 * history is worth. The store itself takes any positive count.
 */
export const MAX_HISTORY_MESSAGES = 1_000_000;

/**
 * The shortest history age a node takes (`createNode`, `--history-age`): 10 minutes. The age is also
 * how old a message the node takes in at all, so it is how far a peer's clock may lag and how late a
 * message may come (a resync's backlog goes at the sender's rate): a node with a 1 s age dropped
 * every message of a peer whose clock was 2 s behind, and never fetched it. 10 minutes covers the
 * 2 minutes a clock may be ahead (the dedup's skew), the other way, with room for resyncs. The store
 * itself takes any positive age (its specs run on an injected clock). To keep fewer messages, use
 * `maxMessages`.
 */
export const MIN_HISTORY_AGE_MS = 10 * 60_000;

/**
 * What the store keeps of a message's frame: what it is shown and ordered by. The signature, key and
 * batch proof stay in the payload (parse it to check them again): kept as strings as well, they were
 * about half of each held message's memory, and all of it copied by the garbage collector as it aged.
 */
export type HeldFrame = Pick<ChatFrame, 'id' | 'from' | 'nick' | 'ts' | 'seq' | 'text'>;

/** One stored message: what is kept of its frame, and its payload bytes exactly as they travel. */
export interface StoredMessage {
  readonly frame: HeldFrame;
  readonly payload: Buffer;
  /** When this node took it in (its clock, ms; the load time for a message read from the log). */
  readonly at: number;
  /**
   * Whether its signature was checked. A message its own author delivered over the authenticated
   * channel and that went nowhere else is kept unchecked; it is checked before it is sent on (resync).
   */
  verified: boolean;
}

/** Sequence numbers `[first, last]`, both included. */
export type SeqRange = readonly [number, number];

/** What a peer asks for in a resync, beyond its marks. */
export interface LackingOptions {
  /** Per sender, ranges above its mark that the peer holds already: not sent again. */
  readonly have?: ReadonlyMap<string, readonly SeqRange[]>;
  /** Only messages taken in at or before this time (ms): younger ones are likely still in flight. */
  readonly takenBy?: number;
  /**
   * Above the highest the peer holds of a sender (the last of its `have` ranges, else its mark), only
   * what was taken in at or before this time (ms): a peer in the middle of a burst asks so, since a
   * younger tail is likely still on its way; gaps below are sent as usual.
   */
  readonly tailTakenBy?: number;
  /** Only messages stamped at or after this time (ms): what the peer's window takes in. */
  readonly since?: number;
}

/** The highest sequence number held without a gap, per sender: what a peer is asked to go beyond. */
export type Marks = ReadonlyMap<string, number>;

/** Told of a streak of failed compactions, and of its end (see {@link MessageStore.onCompactionFailure}). */
export type CompactionFailureHandler = (err: NodeJS.ErrnoException | undefined) => void;

/** What {@link MessageStore.open} found wrong in the file and dropped. */
export interface StoreRepair {
  readonly droppedBytes: number;
  readonly reason: string;
}

const LOG_FILE = 'messages.log';
/**
 * The file a routine compaction writes in the background ({@link MessageStore.startCompaction}), apart
 * from the synchronous compaction's `messages.log.tmp`: one given up (a failed write, a close) may
 * still have a write in flight on libuv's thread pool, into its own file, while a synchronous one
 * writes the other.
 */
const NEXT_LOG_FILE = 'messages.log.next';
/**
 * Bytes of the window a routine compaction hands to one write: the records' headers (and their
 * checksums) are made on the event loop a chunk at a time, a few milliseconds each, rather than for
 * the whole window (up to 1 GB) at once; and a compaction given up stops after the chunk in flight.
 */
const COMPACT_CHUNK_BYTES = 1024 * 1024;
/**
 * Rounds of a routine compaction that write in the background what was written to the log while
 * the window was, each synced. In a burst new records come while the last ones are written: what
 * came during the last round is written (and synced) on the event loop as the file replaces the log.
 */
const CATCH_UP_ROUNDS = 4;
/**
 * A routine compaction is given up once more records came while it ran than the window it writes,
 * and the copies it keeps of them pass this many bytes: a disk whose syncs hang (the slow disk the
 * background compaction is for) would otherwise have it keep every record of a burst in memory.
 * The log holds them all; the first record written once its operation in flight has returned starts
 * another compaction. The bytes are for small windows, which a burst outgrows while a quick
 * compaction runs.
 */
const MAX_TAIL_BYTES_FLOOR = 4 * 1024 * 1024;
const SEQ_FILE = 'seq';
/** Own sequence numbers reserved per write of the `seq` file: one small write per 1,000 messages. */
const SEQ_RESERVE = 1000;
/** While writes fail, the least time between two tries (each a rewrite of the whole window). */
export const WRITE_RETRY_MS = 5_000;

/**
 * After a routine compaction's own file failed (see {@link MessageStore.onCompactionFailure}), the
 * least time before the next one starts: 5 s, as {@link WRITE_RETRY_MS}, so a passing failure (no
 * descriptor left for a moment) costs little; doubled after each failure in a row, up to
 * {@link COMPACT_RETRY_MAX_MS}.
 */
export const COMPACT_RETRY_MS = 5_000;

/**
 * The longest wait between two routine compactions that fail: 5 minutes. Each try writes up to the
 * whole window again (up to 1 GB with the largest `--history`) before a disk without room for that
 * copy refuses it, so the tries are spaced out; the log meanwhile grows by what comes (appends to it
 * still work), at most 5 minutes' worth more than a quicker retry would leave, and a disk that has
 * room again gets its log compacted within those minutes.
 */
export const COMPACT_RETRY_MAX_MS = 5 * 60_000;

/**
 * Present while writes fail (an empty file: creating one needs no data block, so it mostly works on
 * a full disk): own messages may have been sent that the log lacks, so a restart numbers above the
 * reserved block, as after a damaged log. So too after a start that numbered above the block but
 * could not compact the log to say so (see {@link MessageStore.keepLog}).
 */
const UNSAVED_FILE = 'unsaved';

/**
 * Each time the `seq` file cannot be written (at a reservation, a retry, the close), the block
 * reserved is marked by an empty file named `reserved-<upTo>` instead (the previous mark removed):
 * like `unsaved`, it needs no data block, so it mostly works on a full disk. A restart numbers above
 * the highest mark too, so own numbers sent during an outage that outlasts several blocks are not
 * reused. The marks are removed once the `seq` file is written.
 */
const RESERVED_MARK_NAME = /^reserved-(\d{1,16})$/;
const reservedMarkName = (upTo: number): string => `reserved-${upTo}`;

/** The highest block marked by `reserved-<upTo>` files in `dir`, and the names of those files. */
function readReservedMarks(dir: string): { upTo: number; names: string[] } {
  let upTo = 0;
  const names: string[] = [];
  for (const name of readdirSync(dir)) {
    const digits = RESERVED_MARK_NAME.exec(name)?.[1];
    if (digits === undefined) continue;
    const value = Number(digits);
    if (!Number.isSafeInteger(value)) continue;
    names.push(name);
    if (value > upTo) upTo = value;
  }
  return { upTo, names };
}

/** A compaction whose writev stopped part way (a full disk reports what it wrote, not an error). */
const SHORT_WRITE = 'ERR_SHORT_WRITE';

/** A failure of the system (a full disk, an I/O error) from a file system call, not a bug. */
function isSystemError(err: unknown): err is NodeJS.ErrnoException {
  if (!(err instanceof Error) || err instanceof TypeError || err instanceof RangeError) return false;
  const { code, errno, syscall } = err as NodeJS.ErrnoException;
  return code === SHORT_WRITE || (typeof errno === 'number' && typeof syscall === 'string');
}

/**
 * The `seq` file: line 1 the own sequence numbers reserved (up to and including it), line 2 the boot
 * id of the machine when it was written, where the system tells one (Linux). Builds before the boot
 * line read line 1 only.
 */
function readReserved(path: string): { upTo: number; boot: string | undefined } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { upTo: 0, boot: undefined };
    throw err;
  }
  const [first = '', boot = ''] = text.split('\n');
  const value = Number.parseInt(first, 10);
  return { upTo: Number.isSafeInteger(value) && value > 0 ? value : 0, boot: boot === '' ? undefined : boot };
}

/**
 * This boot of the machine (Linux's boot id), undefined where the system does not tell it. Records
 * written in the same boot are in the page cache even when the process was killed; after another
 * boot, those not yet on disk may be gone.
 */
function currentBoot(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * Flushes a directory's entries (a rename) to disk, where the platform allows it: not on Windows,
 * nor on a file system that cannot sync a directory (EINVAL, ENOTSUP, ENOSYS: some FUSE and network
 * ones), which is no failure to write.
 */
function syncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } catch (err) {
    const { code } = err as NodeJS.ErrnoException;
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
  } finally {
    closeSync(fd);
  }
}
const RECORD_HEADER = 8; // u32 length + u32 crc32 of the body
/** Record kinds: append-only. */
const KIND_MESSAGE = 1;
const KIND_META = 2;
/** A message kept without its signature checked (see {@link StoredMessage.verified}). */
const KIND_UNVERIFIED = 3;
/**
 * The records of one turn, under one checksum: a body of `[u32 length][kind byte + body]` entries,
 * each a message record without a checksum of its own. Written whole or torn whole, as a turn's
 * messages are passed on only once their write has returned.
 */
const KIND_BATCH = 4;
/** Bytes in front of each record of a batch: its length. */
const ENTRY_HEADER = 4;
/** Where a turn's first entry goes in its buffer: after the batch record's header and kind byte. */
const TURN_ENTRIES_AT = RECORD_HEADER + 1;
/**
 * The longest record body (kind byte + body, what a record's length field counts) the log holds:
 * 64 frames of the default largest size ({@link DEFAULT_MAX_FRAME_BYTES}), 16 MiB. The writer keeps
 * to it: a turn's batch is written out before it would grow past it ({@link append}), a compaction's
 * meta record is split ({@link metas}), and a message whose record would not fit is not taken
 * ({@link MAX_PAYLOAD_BYTES}: `createNode` refuses a `maxFrameBytes` that would let one in). A longer
 * record is one of a build before this limit (a compaction wrote its meta record whole, whatever the
 * number of senders): it is read only once its bytes, checked a chunk at a time, match its checksum,
 * and is damage otherwise (see {@link legacyDamage}). Read as its length field claims, a damaged one
 * had the start allocate up to 4 GiB before the checksum was looked at, and an allocation that failed
 * stopped the node as a bug.
 */
export const MAX_RECORD_BYTES = 64 * DEFAULT_MAX_FRAME_BYTES;
/**
 * The longest payload the store takes: one that fits a batch of its own (the batch's kind byte, the
 * entry's length and kind byte) within {@link MAX_RECORD_BYTES}. A valid chat frame is far shorter
 * (its text is at most 16 Ki UTF-16 units); only extra fields of a sender under a raised
 * `maxFrameBytes` could make one longer, and `createNode` refuses a `maxFrameBytes` over this: a
 * message it let in and this store did not take would be marked seen, then dropped unseen.
 */
export const MAX_PAYLOAD_BYTES = MAX_RECORD_BYTES - 1 - ENTRY_HEADER - 1;
/** Bytes of a meta record left for its senders: less its kind byte, `lastSeq` and the braces. */
const META_ENTRY_BYTES = MAX_RECORD_BYTES - 64;
/** The crc32 of each kind's byte, where a record's checksum starts. */
const KIND_CRC: readonly number[] = [0, 1, 2, 3].map((kind) => crc32(Uint8Array.of(kind)));
/**
 * Bytes of the log read at a time at start. Not the whole file: readFileSync refuses a file over
 * 2 GiB, which the log of a large window (`--history`) of long messages can reach, and the copy
 * held the whole log while its messages were kept apart.
 */
const LOAD_CHUNK = 4 * 1024 * 1024;
/** A turn's first buffer of records (a burst's turn: ~60 messages of ~350 bytes); kept while no larger. */
const TURN_BYTES = 32 * 1024;

/** A routine compaction in flight (see {@link MessageStore.startCompaction}). */
interface Compaction {
  /** Its file, {@link NEXT_LOG_FILE}, open for writing; closed once it is renamed or given up. */
  readonly fd: number;
  readonly next: string;
  readonly log: string;
  /** Records in the window it writes (messages and meta records). */
  readonly records: number;
  /** The store's `recordsInLog` when the window was taken: those since are in {@link tail} or pending. */
  readonly recordsAtStart: number;
  /**
   * Copies of what was written to the log since the window was taken, not yet in the file: each
   * turn's record(s) as written.
   */
  tail: Uint8Array[];
  tailBytes: number;
  /**
   * Given up (a failed write, a close): its file is removed at once, and its descriptor closed once
   * the operation in flight returns (closed before, its number could be another file's when the
   * thread pool writes to it).
   */
  cancelled: boolean;
}

interface Meta {
  /** Own last sequence number, kept through compactions that drop own messages. */
  lastSeq: number;
  /** Per sender, the highest sequence number that was evicted from the window. */
  floors: Record<string, number>;
  /**
   * Per sender in `floors`, the newest timestamp of its messages (see SenderState.newestTs). Absent
   * in logs of versions before it: such a sender is then taken as seen at the start.
   */
  seen?: Record<string, number>;
}

interface SenderState {
  /**
   * The sender's id and its latest nick, one string each that every message of it held shares: each
   * received message brings strings of its own, and a held message's survive every collection
   * while it is held.
   */
  readonly from: string;
  nick: string;
  /** Held messages by sequence number. */
  readonly held: Map<number, StoredMessage>;
  /** Highest sequence number evicted (or never to be fetched): anything at or below is old. */
  floor: number;
  /** Highest sequence number held or evicted. */
  top: number;
  /**
   * Lowest sequence number held while none was evicted (`floor` 0); 0 before the first. What came
   * before it is history, not a hole ({@link markOf}).
   */
  first: number;
  /**
   * The newest timestamp of its messages held or evicted. Once it is older than the window's age
   * and nothing of the sender is held, its state goes: any message at or below its floor is then
   * too old to be taken in anyway.
   */
  newestTs: number;
}

/**
 * The node's recent history: a bounded window of chat messages, in memory and (with a directory) in
 * an append-only log that survives `kill -9`.
 *
 * The log is a sequence of records `[u32 length][u32 crc32][kind byte + body]`. The messages of one
 * turn of the event loop are written as one batch record (a turn of one message as that message's
 * record), read whole or not at all. A torn or corrupted record stops the reading there: what
 * follows is dropped (and reported by `open`), the file is truncated to the last good record, and
 * resync with peers fetches the rest. When the log holds twice the window it is compacted: the
 * window is rewritten to a temporary file, then renamed over the log; in the background (libuv's
 * thread pool) while the node runs, with what was appended meanwhile added at the end.
 *
 * It is also the replay guard: a message is known when it is held, or when its sequence number is at
 * or below the highest one evicted for its sender, so an old message whose id left the dedup cache
 * is still recognised.
 */
export class MessageStore {
  /**
   * State per sender, in the order their latest message arrived (the most recent last): a sync
   * frame that cannot list every sender lists the most recent ones.
   */
  private readonly senders = new Map<string, SenderState>();
  /** The sender last moved to the end of `senders` (most messages in a row come from one). */
  private latestSender: SenderState | undefined;
  /**
   * Held messages in arrival order (oldest first), for eviction and `recent`, from `orderStart` on;
   * the slots before it are cleared as their messages are evicted (the array is cut down only once
   * they are more than half of it, and kept every evicted message alive until then: twice the
   * window's memory).
   */
  private order: (StoredMessage | undefined)[] = [];
  /**
   * The messages held, by id (the first one held under an id, if senders reuse one: ids are unique
   * only per sender, and a sender may pick another's id).
   */
  private readonly byId = new Map<string, StoredMessage>();
  private orderStart = 0;
  private lastSeq = 0;
  /** Own sequence numbers up to this one are reserved in the `seq` file. */
  private reservedSeq = 0;
  private fd: number | undefined;
  /**
   * Records appended to the log since it was last compacted (or to be: pending ones count), with the
   * compaction's own: the log is compacted once they are more than twice the window.
   */
  private recordsInLog = 0;
  /** Bytes of the log the start read as whole records: where a damaged tail it dropped begins. */
  private loadedBytes = 0;
  /** The routine compaction in flight, or given up with an operation still in flight: one at a time. */
  private compacting: Compaction | undefined;
  /**
   * Records of this turn of the event loop not written yet, as one batch record being built: its
   * record header and kind before {@link TURN_ENTRIES_AT}, then each record's length, kind and body
   * up to `pendingAt`, `pending` of them. Written in one write (see {@link flush}).
   */
  private turn: Buffer = Buffer.alloc(0);
  private pendingAt = TURN_ENTRIES_AT;
  private pending = 0;
  /** Callbacks waiting for the pending records to be written, in order ({@link afterWrite}). */
  private waiting: (() => void)[] = [];
  private flushScheduled = false;
  private runningCallbacks = false;
  /** The error that made writes fail, until one works again (see {@link onWriteFailure}). */
  private writeFailure: NodeJS.ErrnoException | undefined;
  private retryAt = 0;
  /**
   * The error of the compactions failing in a row, the first of those with its code (see
   * {@link onCompactionFailure}).
   */
  private compactionFailure: NodeJS.ErrnoException | undefined;
  /**
   * When the last one failed (ms): no routine compaction starts before {@link compactBackoffMs}
   * later. A clock that reads earlier went back since, and the retry is due at once, rather than
   * once the clock has made up the step as well as the backoff.
   */
  private compactFailedAt = 0;
  /** The wait after the last failure; 0 once a compaction worked (or before any failed). */
  private compactBackoffMs = 0;
  private readonly maxMessages: number;
  private readonly maxAgeMs: number;

  /**
   * Told when writing to the directory fails with a system error (a full disk, an I/O error): with
   * that error, once, and with `undefined` when writing works again. Meanwhile the store goes on in
   * memory, so the node goes on showing and relaying messages (its peers hold copies): what must
   * wait for the write (see {@link afterWrite}) runs without it. At a flush or {@link retryWrite} at
   * least {@link WRITE_RETRY_MS} after the last try, and at {@link close}, it tries again by
   * rewriting the whole window (the log's end may be torn), which writes what was kept meanwhile
   * too, and the `seq` file. Bugs (TypeError, RangeError, any error not from a system call) are
   * thrown.
   */
  onWriteFailure: ((err: NodeJS.ErrnoException | undefined) => void) | undefined;

  /**
   * Told when a routine compaction in the background fails on its own file, {@link NEXT_LOG_FILE}
   * (a full disk, an I/O error, no descriptor left to open it, a rename that fails), while the log
   * itself takes records: with that error, once for failures in a row (again when one fails with
   * another error code: EMFILE, then ENOSPC), and with `undefined` once a
   * compaction works again. That is no failed write (see {@link onWriteFailure}): the file is
   * removed, the log is as it was, and records go on to it as ever, nothing kept in memory only.
   * The next one starts at the store's first use {@link COMPACT_RETRY_MS} later (a record added, or
   * a look-up that drops what aged out: marks, a resync's), then twice as long
   * after each failure in a row, up to {@link COMPACT_RETRY_MAX_MS} (at once where the clock went
   * back before the last failure: not once it has made up the step too): a disk without room for a
   * second copy of the window would otherwise have one written and refused at every record.
   * Meanwhile the log grows past twice the window, by what comes until a compaction works. A failure
   * to write to the log itself, or to go on with the new one once it is renamed, is a failed write.
   * So too the compaction at the start ({@link open}) that fails on its own file, `messages.log.tmp`:
   * the store starts on the log as it is. That failure comes before a handler can be set, so a
   * handler set during a streak is told of it at once.
   */
  get onCompactionFailure(): CompactionFailureHandler | undefined {
    return this.compactionFailureHandler;
  }

  set onCompactionFailure(handler: CompactionFailureHandler | undefined) {
    this.compactionFailureHandler = handler;
    if (this.compactionFailure !== undefined) handler?.(this.compactionFailure);
  }

  private compactionFailureHandler: CompactionFailureHandler | undefined;

  private constructor(
    private readonly selfId: string,
    private readonly dir: string | undefined,
    window: HistoryWindow,
    private readonly now: () => number,
  ) {
    this.maxMessages = window.maxMessages ?? HISTORY_DEFAULTS.maxMessages;
    this.maxAgeMs = window.maxAgeMs ?? HISTORY_DEFAULTS.maxAgeMs;
    if (!Number.isInteger(this.maxMessages) || this.maxMessages < 1) {
      throw new RangeError(`history: maxMessages must be a positive integer, got ${this.maxMessages}`);
    }
    if (!Number.isInteger(this.maxAgeMs) || this.maxAgeMs < 1) {
      throw new RangeError(`history: maxAgeMs must be a positive integer, got ${this.maxAgeMs}`);
    }
  }

  /**
   * Opens the store of node `selfId` in `dir` (created if missing), or an in-memory one without `dir`.
   * Returns it with what had to be dropped from a damaged log, if anything. The log is compacted
   * first; when that fails on its own file with a system error (a disk without room for a copy of
   * the window), the store starts on the log as it is (see {@link keepLog}). Throws a bug, and a
   * failure to open the log or to cut a damaged tail from it.
   */
  static open(
    selfId: string,
    dir: string | undefined,
    window: HistoryWindow = {},
    now: () => number = Date.now,
  ): { store: MessageStore; repair: StoreRepair | undefined } {
    const store = new MessageStore(selfId, dir, window, now);
    let repair: StoreRepair | undefined;
    let unsaved = false;
    let raised = false;
    if (dir !== undefined) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      rmQuietly(join(dir, NEXT_LOG_FILE)); // a routine compaction's, cut short by a crash: never read
      repair = store.load(join(dir, LOG_FILE));
      const marks = readReservedMarks(dir);
      const reserved = readReserved(join(dir, SEQ_FILE));
      store.reservedSeq = Math.max(reserved.upTo, marks.upTo);
      store.markFiles = marks.names;
      // With a damaged log, or one that writes failed to keep up to date, the last own numbers may
      // be gone from it: resume above the reserved block rather than reuse one (peers would drop the
      // new message as known). So too when the machine may have restarted since the seq file was
      // written: the log is not synced, and records lost with the page cache can leave a log cut
      // between two records, which looks whole; or a log that shows no own number at all (gone,
      // emptied). A close writes the last number used as the block (see close), so only a stop
      // without one skips the rest of a block.
      unsaved = existsSync(join(dir, UNSAVED_FILE)) || marks.names.length > 0;
      const sameBoot = reserved.boot !== undefined && reserved.boot === currentBoot();
      if (repair !== undefined || unsaved || !sameBoot || store.lastSeq === 0) {
        raised = store.reservedSeq > store.lastSeq;
        store.lastSeq = Math.max(store.lastSeq, store.reservedSeq);
      }
    }
    store.evict();
    if (dir !== undefined) {
      try {
        let records: number | undefined;
        try {
          records = store.replaceLog(dir); // start from a clean log holding just the window
        } catch (err) {
          if (!isSystemError(err)) throw err;
          store.keepLog(dir, err, raised && !unsaved);
        }
        if (records !== undefined) {
          store.useCompacted(dir, records);
          if (unsaved) {
            store.writeReserved(dir);
            rmSync(join(dir, UNSAVED_FILE), { force: true });
          }
        }
      } catch (err) {
        // Not started: the store is not handed out, so its log's descriptor is closed here.
        if (store.fd !== undefined) closeSync(store.fd);
        store.fd = undefined;
        throw err;
      }
    }
    return { store, repair };
  }

  /** Number of messages held. */
  get size(): number {
    return this.order.length - this.orderStart;
  }

  /** The sequence number {@link nextSeq} gave last (or a higher one of this node's that came back); 0 before any. */
  get ownSeq(): number {
    return this.lastSeq;
  }

  /**
   * The next sequence number for a message of this node (never reused, across restarts too: when
   * the log was damaged, or writes failed until the node stopped, numbering resumes above the block
   * reserved in the `seq` file or marked by a `reserved-<upTo>` file).
   */
  nextSeq(): number {
    this.lastSeq++;
    if (this.lastSeq > this.reservedSeq) this.reserve(this.lastSeq + SEQ_RESERVE);
    return this.lastSeq;
  }

  private reserve(upTo: number): void {
    // Raised first: while writes fail, the file is written again with the log (compactOrFail).
    this.reservedSeq = upTo;
    if (this.dir === undefined) return;
    try {
      this.writeReserved(this.dir);
    } catch (err) {
      this.failed(err);
    }
  }

  /** The `reserved-<upTo>` files in the directory (see {@link RESERVED_MARK_NAME}). */
  private markFiles: string[] = [];

  /**
   * Writes the `seq` file (a temporary file synced to disk and renamed over it, the rename synced
   * too: the block must be on disk before its numbers are sent, as the log is not synced), then
   * removes the marks it supersedes. When the disk refuses it, marks the block instead (see
   * {@link markReserved}) and throws.
   */
  private writeReserved(dir: string): void {
    const path = join(dir, SEQ_FILE);
    try {
      const boot = currentBoot();
      const fd = openSync(`${path}.tmp`, 'w', 0o600);
      try {
        writeFileSync(fd, boot === undefined ? `${this.reservedSeq}\n` : `${this.reservedSeq}\n${boot}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(`${path}.tmp`, path);
      syncDir(dir);
    } catch (err) {
      rmQuietly(`${path}.tmp`);
      if (isSystemError(err)) this.markReserved(dir);
      throw err;
    }
    this.removeMarks(dir, undefined);
  }

  /**
   * The `seq` file could not be written: the block reserved is marked by an empty file instead, and
   * the older marks removed. Best effort, as the `unsaved` mark: the disk may refuse even an empty
   * file (the next try, at a retry or the close, makes it then).
   */
  private markReserved(dir: string): void {
    const name = reservedMarkName(this.reservedSeq);
    if (touchMark(join(dir, name))) this.removeMarks(dir, name); // else the older marks are all there is
  }

  /** Removes the marks other than `keep`. One that cannot be removed stays (a start skips a block for it). */
  private removeMarks(dir: string, keep: string | undefined): void {
    const left: string[] = keep === undefined ? [] : [keep];
    for (const name of this.markFiles) {
      if (name === keep) continue;
      try {
        rmSync(join(dir, name), { force: true });
      } catch (err) {
        if (!isSystemError(err)) throw err;
        left.push(name);
      }
    }
    this.markFiles = left;
  }

  /**
   * True when the message held under this id has exactly these bytes: for a copy of a held message,
   * recognised before its payload is parsed (see `chatIdOf`). The bytes, not the id alone: another
   * sender's message under the same id (a sender may pick any id) is not a copy, and goes on to be
   * checked in full.
   */
  holdsCopy(id: string, payload: Uint8Array): boolean {
    const held = this.byId.get(id);
    return held !== undefined && held.payload.equals(payload);
  }

  /**
   * True when the message is held, or older than what is held for its sender; with `ts`, also when
   * its sender is not known and it is older than the window's age (a sender forgotten as stale: see
   * forgetIfStale), so the node's cheap first check still drops replays of its old messages.
   */
  knows(frame: Pick<ChatFrame, 'from' | 'seq'> & { readonly ts?: number }): boolean {
    const sender = this.senderOf(frame.from);
    if (sender === undefined) return frame.ts !== undefined && frame.ts < this.oldest();
    return frame.seq <= sender.floor || sender.held.has(frame.seq);
  }

  /**
   * True when the message before this one of its sender (by sequence number) is missing: neither
   * held nor older than what is held, while an earlier one is (as {@link marks} counts: what came
   * before the first message held of a sender is history, not a hole). Two map lookups: cheap enough
   * for every message, to notice a hole in a sender's stream while the stream goes on.
   */
  missesBefore(frame: Pick<ChatFrame, 'from' | 'seq'>): boolean {
    const sender = this.senderOf(frame.from);
    if (sender === undefined) return false;
    const before = frame.seq - 1;
    if (before <= sender.floor || sender.held.has(before)) return false;
    return sender.floor > 0 || sender.first < before;
  }

  /**
   * Adds a message unless it is known, outside the window, or longer than the log keeps
   * ({@link MAX_PAYLOAD_BYTES}); returns whether it was added.
   * Its record is written to the log with the others of this turn of the event loop, in one write at
   * the end of the turn (a microtask), or at once by {@link flush}. Whatever must not happen before
   * the message is on disk (showing it, relaying it) waits for {@link afterWrite}.
   */
  add(frame: ChatFrame, payload: Buffer, verified = true): boolean {
    if (payload.length > MAX_PAYLOAD_BYTES || this.knows(frame)) return false;
    const now = this.now();
    if (frame.ts < now - this.maxAgeMs) return false;
    // The record's bytes are copied into the turn's batch at once (see append), whatever the caller
    // does with its buffer afterwards.
    const kept = this.hold(frame, payload, now, verified);
    this.append(verified ? KIND_MESSAGE : KIND_UNVERIFIED, kept);
    this.evict();
    return true;
  }

  /** The highest sequence number held without a gap, per sender. */
  marks(): Map<string, number> {
    this.evict();
    const marks = new Map<string, number>();
    const oldest = this.oldest();
    for (const [from, sender] of this.senders) {
      if (!this.forgetIfStale(sender, oldest)) marks.set(from, markOf(sender));
    }
    return marks;
  }

  /**
   * The first message missing of some sender (the one after its mark, below a message held), or
   * undefined when no sender's stream has a hole; senders for which `skip` is true are passed over.
   * Walks each sender's run of held messages: for a timer, not for every message (see
   * {@link missesBefore}).
   */
  firstHole(skip?: (from: string) => boolean): { readonly from: string; readonly seq: number } | undefined {
    this.evict();
    for (const [from, sender] of this.senders) {
      if (skip?.(from) === true) continue;
      const mark = markOf(sender);
      if (mark < sender.top) return { from, seq: mark + 1 };
    }
    return undefined;
  }

  /**
   * Per sender, the ranges of sequence numbers held above `mark` (at most `max` ranges, the lowest):
   * what a peer need not send again when this node asks beyond its marks.
   */
  heldAbove(from: string, mark: number, max: number): SeqRange[] {
    const held = this.senders.get(from)?.held;
    if (held === undefined) return [];
    const seqs = [...held.keys()].filter((seq) => seq > mark).sort((a, b) => a - b);
    const ranges: [number, number][] = [];
    for (const seq of seqs) {
      const last = ranges[ranges.length - 1];
      if (last !== undefined && seq === last[1] + 1) last[1] = seq;
      else if (ranges.length === max) break;
      else ranges.push([seq, seq]);
    }
    return ranges;
  }

  /**
   * Messages a peer with `marks` lacks: per sender, in sequence order, those above its mark, less
   * those `options` says it holds or that are too young to send.
   */
  lacking(marks: Marks, options: LackingOptions = {}): StoredMessage[] {
    this.evict();
    const { have, takenBy = Infinity, tailTakenBy = Infinity, since = 0 } = options;
    // Evict drops by age from the front of the arrival order only: one that came late may be older.
    const oldest = Math.max(this.oldest(), since);
    const perSender = new Map<string, StoredMessage[]>();
    const all: StoredMessage[] = [];
    for (const [from, sender] of this.senders) {
      const mark = marks.get(from) ?? 0;
      const ranges = have?.get(from) ?? [];
      const { top } = sender;
      if (mark >= top) continue; // the usual case in a periodic sync: it has them all
      const highest = ranges[ranges.length - 1]?.[0] ?? mark;
      const wanted = (m: StoredMessage): boolean =>
        m.at <= takenBy &&
        m.frame.ts >= oldest &&
        (m.frame.seq < highest || m.at <= tailTakenBy) &&
        !ranges.some(([first, last]) => m.frame.seq >= first && m.frame.seq <= last);
      let list: StoredMessage[];
      if (top - mark <= sender.held.size) {
        // Few above the mark (a peer a little behind): look those up rather than scan the window.
        list = [];
        for (let seq = mark + 1; seq <= top; seq++) {
          const m = sender.held.get(seq);
          if (m !== undefined && wanted(m)) list.push(m);
        }
      } else {
        list = [...sender.held.values()]
          .filter((m) => m.frame.seq > mark && wanted(m))
          .sort((a, b) => a.frame.seq - b.frame.seq);
      }
      if (list.length === 0) continue;
      perSender.set(from, list);
      all.push(...list);
    }
    // The conversation's order (by timestamp), with each sender's messages kept in sequence order
    // even if its clock went backwards: sort the slots by time, then fill each sender's slots in order.
    all.sort((a, b) => a.frame.ts - b.frame.ts || a.frame.seq - b.frame.seq);
    const next = new Map<string, number>();
    return all.map((slot) => {
      const i = next.get(slot.frame.from) ?? 0;
      next.set(slot.frame.from, i + 1);
      return perSender.get(slot.frame.from)![i]!;
    });
  }

  /**
   * The last `n` messages held that are within the window's age, oldest first (in arrival order).
   * Evict drops by age from the front of the arrival order only: one that came late may be older
   * than the age while it waits behind younger ones, and is left out.
   */
  recent(n: number): StoredMessage[] {
    this.evict();
    const oldest = this.oldest();
    const last: StoredMessage[] = [];
    // From orderStart on, every slot holds a message.
    for (let i = this.order.length - 1; i >= this.orderStart && last.length < n; i--) {
      const message = this.order[i]!;
      if (message.frame.ts >= oldest) last.push(message);
    }
    return last.reverse();
  }

  /**
   * How many of the messages held have a payload longer than `bytes`, and the longest of them (0
   * when none has). A node run before with a larger `maxFrameBytes` may hold such messages: they are
   * kept (shown, and sent again once the node runs with a limit they fit), and no frame of a node
   * whose limit is `bytes` can carry them. One walk of the window: for the start, not per message.
   */
  longerThan(bytes: number): { readonly count: number; readonly longest: number } {
    this.evict();
    let count = 0;
    let longest = 0;
    // From orderStart on, every slot holds a message.
    for (let i = this.orderStart; i < this.order.length; i++) {
      const { length } = this.order[i]!.payload;
      if (length <= bytes) continue;
      count++;
      if (length > longest) longest = length;
    }
    return { count, longest };
  }

  /**
   * Runs `callback` once every record added so far is written: at once when none is pending (always,
   * for a store without a directory), else right after the write, in the order of the calls.
   */
  afterWrite(callback: () => void): void {
    if (this.pending === 0 && this.waiting.length === 0) callback();
    else this.waiting.push(callback);
  }

  /**
   * Writes the pending records now (one write), then runs what waited for them. Called from inside
   * one of those callbacks, it writes only: the outer call goes on running them, in order.
   */
  flush(): void {
    if (this.pending > 0) this.writeTurn();
    if (this.runningCallbacks) return;
    this.runningCallbacks = true;
    try {
      // A callback may add more records: what waits after them runs after their write.
      while (this.waiting.length > 0 && this.pending === 0) this.waiting.shift()!();
    } finally {
      this.runningCallbacks = false;
    }
  }

  /**
   * While writes fail, tries again (at most every {@link WRITE_RETRY_MS}): for a timer, so a quiet
   * chat gets its history written once the disk has room again.
   */
  retryWrite(): void {
    // fd: not for a closed store.
    if (this.writeFailure !== undefined && this.fd !== undefined && this.now() >= this.retryAt) {
      this.compactOrFail();
    }
  }

  /**
   * Writes what is pending (while writes fail: one last try of the whole window), and closes the log.
   * The `seq` file is given the last own number used, so the next start goes on right after it,
   * whatever the log lost (see open).
   */
  close(): void {
    this.flush();
    // A routine compaction in flight is given up, its file removed now: the log holds every record
    // written, and the next start compacts it anyway. (An exit right after waits for its operation
    // in flight on the thread pool, such as the sync of the whole window: Node finishes those first.)
    this.cancelCompaction();
    if (this.writeFailure !== undefined && this.fd !== undefined) this.compactOrFail();
    if (this.fd === undefined) return;
    if (this.dir !== undefined && this.writeFailure === undefined && this.lastSeq < this.reservedSeq) {
      // Nothing above lastSeq was used. Should this fail, the block stays reserved (marked, or in
      // the file as it was): the next start skips the rest of it, as after a kill.
      this.reservedSeq = this.lastSeq;
      try {
        this.writeReserved(this.dir);
      } catch (err) {
        if (!isSystemError(err)) throw err;
      }
    }
    closeSync(this.fd);
    this.fd = undefined;
  }

  // ---- internals -----------------------------------------------------------------------------

  /**
   * The state of sender `from`, if any. The last one found is kept: in a burst one sender's messages
   * come one after another, and each was four lookups of the same key (whose string is new with each
   * message, so each hashed it again). Forgetting a sender clears it (see forgetIfStale).
   */
  private senderOf(from: string): SenderState | undefined {
    if (from === this.lastSender?.from) return this.lastSender;
    const sender = this.senders.get(from);
    if (sender !== undefined) this.lastSender = sender;
    return sender;
  }

  private lastSender: SenderState | undefined;

  /** Keeps a message (taken in at `at`): what is kept of its frame, and its payload; returns the payload kept. */
  private hold(chat: ChatFrame, payload: Buffer, at: number, verified: boolean): Buffer {
    let sender = this.senderOf(chat.from);
    if (sender === undefined) {
      sender = newSender(chat.from);
      this.senders.set(chat.from, sender);
    }
    if (sender.nick !== chat.nick) sender.nick = chat.nick;
    if (chat.ts > sender.newestTs) sender.newestTs = chat.ts;
    if (this.latestSender !== sender) {
      // To the end of the order of senders (see senders): once per run of one sender's messages.
      this.senders.delete(sender.from);
      this.senders.set(sender.from, sender); // its own string as the key, not this message's
      this.latestSender = sender;
    }
    // Literal, not heldFrame(): the sender's own strings for its id and nick.
    const frame: HeldFrame = {
      id: chat.id,
      from: sender.from,
      nick: sender.nick,
      ts: chat.ts,
      seq: chat.seq,
      text: chat.text,
    };
    const message: StoredMessage = { frame, payload: keepable(payload), at, verified };
    if (chat.from === this.selfId && chat.seq > this.lastSeq) this.lastSeq = chat.seq;
    if (!this.byId.has(frame.id)) this.byId.set(frame.id, message);
    sender.held.set(frame.seq, message);
    if (frame.seq > sender.top) sender.top = frame.seq;
    if (sender.first === 0 || frame.seq < sender.first) sender.first = frame.seq;
    this.order.push(message);
    return message.payload;
  }

  /** Drops the oldest messages beyond the window, raising their senders' floors. */
  private evict(): void {
    const oldest = this.oldest();
    for (let size = this.size; size > 0; size--) {
      const first = this.order[this.orderStart]!;
      if (size <= this.maxMessages && first.frame.ts >= oldest) break;
      this.order[this.orderStart++] = undefined;
      if (this.byId.get(first.frame.id) === first) this.byId.delete(first.frame.id);
      const sender = this.senderOf(first.frame.from)!;
      sender.held.delete(first.frame.seq);
      // Everything of this sender up to here is now "old"; a later-arrived lower seq still held is
      // evicted in its own turn (and is known either way).
      if (first.frame.seq > sender.floor) sender.floor = first.frame.seq;
      this.forgetIfStale(sender, oldest);
    }
    if (this.orderStart > 1024 && this.orderStart * 2 > this.order.length) {
      this.order = this.order.slice(this.orderStart);
      this.orderStart = 0;
    }
    // While writes fail, retries have their own pace (see writeTurn); after a failed compaction,
    // its backoff (see onCompactionFailure).
    if (
      this.fd !== undefined &&
      this.recordsInLog > this.compactionThreshold() &&
      this.writeFailure === undefined &&
      this.compacting === undefined &&
      this.compactionDue()
    ) {
      this.startCompaction();
    }
  }

  /**
   * The meta records of a compaction: one, unless the senders' floors could make it longer than a
   * record may be ({@link MAX_RECORD_BYTES}: some 100,000 senders): then as many as it takes,
   * each with some of the senders (reading them merges them, as it merges any two meta records).
   */
  private metas(): Meta[] {
    const metas: Meta[] = [];
    let floors: Record<string, number> = {};
    let seen: Record<string, number> = {};
    let bytes = 0;
    const oldest = this.oldest();
    for (const [from, sender] of this.senders) {
      if (sender.floor === 0 || this.forgetIfStale(sender, oldest)) continue;
      // At most what its two entries take as JSON: the key twice, a safe integer (at most 17
      // characters) with its colon and comma twice.
      const entry = 2 * (Buffer.byteLength(JSON.stringify(from)) + 19);
      if (bytes + entry > META_ENTRY_BYTES) {
        metas.push({ lastSeq: this.lastSeq, floors, seen });
        floors = {};
        seen = {};
        bytes = 0;
      }
      floors[from] = sender.floor;
      seen[from] = sender.newestTs;
      bytes += entry;
    }
    metas.push({ lastSeq: this.lastSeq, floors, seen });
    return metas;
  }

  /** The oldest timestamp the window takes in now (ms): anything stamped before it is too old. */
  private oldest(): number {
    return this.now() - this.maxAgeMs;
  }

  /**
   * Forgets a sender none of whose messages is held, and whose newest is older than `oldest`: its
   * floor no longer protects anything, as {@link add} refuses a message that old. Without it, the
   * state of every sender ever seen would stay, in memory and in each compaction's meta record.
   * True when it was forgotten.
   */
  private forgetIfStale(sender: SenderState, oldest: number): boolean {
    if (sender.held.size > 0 || sender.newestTs >= oldest) return false;
    this.senders.delete(sender.from);
    if (this.lastSender === sender) this.lastSender = undefined;
    if (this.latestSender === sender) this.latestSender = undefined;
    return true;
  }

  /**
   * Reads the log, {@link LOAD_CHUNK} bytes at a time; stops at the first torn or damaged record (the
   * start's compaction then rewrites the file without it, or, failing, the file is cut there).
   */
  private load(path: string): StoreRepair | undefined {
    const fd = openIfExists(path);
    if (fd === undefined) return undefined;
    try {
      return this.loadFrom(fd, fstatSync(fd).size);
    } finally {
      closeSync(fd);
    }
  }

  private loadFrom(fd: number, size: number): StoreRepair | undefined {
    let chunk = Buffer.alloc(0);
    let chunkAt = 0; // where chunk[0] is in the file
    /** The `length` bytes at `at` (all within the file), from the chunk or a new one read from `at`. */
    const bytesAt = (at: number, length: number): Buffer => {
      if (at + length > chunkAt + chunk.length) {
        chunk = Buffer.alloc(Math.min(Math.max(LOAD_CHUNK, length), size - at)); // zeros if it shrank
        readAt(fd, chunk, chunk.length, at);
        chunkAt = at;
      }
      return chunk.subarray(at - chunkAt, at - chunkAt + length);
    };
    let offset = 0;
    let reason: string | undefined;
    while (offset < size) {
      if (size - offset < RECORD_HEADER) {
        reason = 'a torn record header at the end';
        break;
      }
      const header = bytesAt(offset, RECORD_HEADER);
      const length = header.readUInt32BE(0);
      const sum = header.readUInt32BE(4);
      const over = length > MAX_RECORD_BYTES;
      if (length < 1 || length > size - offset - RECORD_HEADER) {
        reason =
          length < 1
            ? 'an empty record'
            : over
              ? `a damaged record at byte ${offset} (its length field says ${length} bytes, over the longest record, ${MAX_RECORD_BYTES}, and past the end of the file)`
              : 'a torn record at the end';
        break;
      }
      if (over) {
        // No record of this writer is that long, but an older build's meta record (or turn) could
        // be: its bytes are checked against its checksum a chunk at a time before the record is
        // read whole, so a damaged length field (which fits the file) costs a read, not memory.
        const damage = legacyDamage(fd, offset + RECORD_HEADER, length, sum);
        if (damage !== undefined) {
          reason = `a damaged record at byte ${offset} (its length field says ${length} bytes, over the longest record, ${MAX_RECORD_BYTES}, and ${damage})`;
          break;
        }
      }
      const body = bytesAt(offset + RECORD_HEADER, length);
      if (crc32(body) !== sum) {
        reason = `a damaged record at byte ${offset}`;
        break;
      }
      try {
        this.replay(body);
      } catch (err) {
        if (!(err instanceof ProtocolError) && !(err instanceof SyntaxError)) throw err;
        reason = `an unreadable record at byte ${offset}`;
        break;
      }
      offset += RECORD_HEADER + length;
    }
    this.recordsInLog = 0;
    this.loadedBytes = offset;
    return reason === undefined ? undefined : { droppedBytes: size - offset, reason };
  }

  private replay(body: Buffer): void {
    const kind = body[0];
    if (kind === KIND_BATCH) {
      // Every entry is read before any is held: a batch is taken whole or not at all.
      const messages: StoredRecord[] = [];
      let at = 1;
      while (at < body.length) {
        const length = body.length - at >= ENTRY_HEADER ? getUint32(body, at) : 0;
        if (length < 1 || length > body.length - at - ENTRY_HEADER)
          throw new ProtocolError('ERR_BAD_FRAME', 'a batch record with a malformed entry');
        messages.push(storedRecord(body.subarray(at + ENTRY_HEADER, at + ENTRY_HEADER + length)));
        at += ENTRY_HEADER + length;
      }
      for (const message of messages) this.replayMessage(message);
      return;
    }
    if (kind === KIND_META) {
      // Longer than a string may be (V8's limit, 512 MiB: an older build's single meta record of
      // some 5 million senders), it cannot be parsed: unreadable, rather than a bug exit.
      if (body.length - 1 > constants.MAX_STRING_LENGTH)
        throw new ProtocolError('ERR_FRAME_TOO_LARGE', 'a meta record longer than a string may be');
      const meta = JSON.parse(body.toString('utf8', 1)) as Meta;
      if (typeof meta.lastSeq === 'number' && meta.lastSeq > this.lastSeq) this.lastSeq = meta.lastSeq;
      for (const [from, floor] of Object.entries(meta.floors ?? {})) {
        if (typeof floor !== 'number') continue;
        const sender = this.senders.get(from) ?? newSender(from);
        sender.floor = Math.max(sender.floor, floor);
        sender.top = Math.max(sender.top, floor);
        const seen = meta.seen?.[from];
        sender.newestTs = Math.max(sender.newestTs, typeof seen === 'number' ? seen : this.now());
        this.senders.set(from, sender);
      }
      return;
    }
    this.replayMessage(storedRecord(body));
  }

  /**
   * Holds a message read from the log unless it is held already. Not `knows`: a message may be
   * held below its sender's floor (it came after a later one of that sender was evicted), and the
   * floors read from a meta record before it must not drop it.
   */
  private replayMessage({ frame, payload, verified }: StoredRecord): void {
    if (this.senderOf(frame.from)?.held.has(frame.seq) === true) return;
    // Longer than this build takes ({@link add}): only an older build's log, under a raised
    // `maxFrameBytes`, holds one. Held, the start's compaction could not write it (record throws).
    if (frame.ts < this.oldest() || payload.length > MAX_PAYLOAD_BYTES) {
      this.passOver(frame);
      return;
    }
    this.hold(frame, payload, this.now(), verified);
    // Evicted as it goes: the log holds up to twice the window, all of it held at once before.
    if (this.size > this.maxMessages) this.evict();
  }

  /**
   * A message read from the log that is older than the window's age already (one that came late
   * stays in the log behind younger ones until they are evicted), or longer than this build takes:
   * not held, but counted as evicted,
   * so its sender's floor still guards it, and an own number is not used again.
   */
  private passOver(frame: ChatFrame): void {
    let sender = this.senderOf(frame.from);
    if (sender === undefined) {
      sender = newSender(frame.from);
      this.senders.set(frame.from, sender);
    }
    if (frame.seq > sender.floor) sender.floor = frame.seq;
    if (frame.seq > sender.top) sender.top = frame.seq;
    if (frame.ts > sender.newestTs) sender.newestTs = frame.ts;
    if (frame.from === this.selfId && frame.seq > this.lastSeq) this.lastSeq = frame.seq;
  }

  /** {@link record} of a meta record, as the compactions write them before the window. */
  private metaRecord(parts: Uint8Array[], meta: Meta): number {
    return this.record(parts, KIND_META, Buffer.from(JSON.stringify(meta), 'utf8'));
  }

  /** {@link record} of a message of the window, as the compactions write it. */
  private messageRecord(parts: Uint8Array[], message: StoredMessage): number {
    return this.record(parts, message.verified ? KIND_MESSAGE : KIND_UNVERIFIED, message.payload);
  }

  /**
   * Appends one record to `parts`, as its header (length, crc32, kind) and the body itself: for the
   * compactions, which write the window with writev, so the bodies (payloads held anyway) are not
   * copied into a buffer of their own. Returns the record's bytes.
   */
  private record(parts: Uint8Array[], kind: number, body: Buffer): number {
    if (1 + body.length > MAX_RECORD_BYTES) {
      throw new RangeError(`a record of ${1 + body.length} bytes, over the longest the log holds`);
    }
    // A plain Uint8Array and byte stores: Buffer.allocUnsafe and writeUInt32BE check their arguments
    // through wrappers that allocate, for every message.
    const header = new Uint8Array(RECORD_HEADER + 1);
    putUint32(header, 0, 1 + body.length);
    header[RECORD_HEADER] = kind;
    putUint32(header, 4, crc32(body, KIND_CRC[kind])); // the crc32 of kind + body, without joining them
    parts.push(header, body);
    return header.length + body.length;
  }

  /**
   * Queues one record; the turn's records are written together before any of their messages goes
   * further (shown, relayed: see {@link afterWrite}). A write that returned survives `kill -9` (it is
   * in the page cache), so a message shown is a message kept; one write per turn instead of one per
   * message, and one checksum: the records are copied into the turn's batch record as they come.
   */
  private append(kind: number, body: Buffer): void {
    if (this.fd === undefined) return;
    const entry = ENTRY_HEADER + 1 + body.length;
    // A turn that would grow past the longest record is written out first: the rest of it goes in
    // a record of its own. What waits for the turn runs once both are written (see flush).
    if (this.pending > 0 && this.pendingAt + entry > RECORD_HEADER + MAX_RECORD_BYTES) this.writeTurn();
    if (this.pendingAt + entry > this.turn.length) this.growTurn(entry);
    const turn = this.turn;
    const at = this.pendingAt;
    putUint32(turn, at, 1 + body.length);
    turn[at + ENTRY_HEADER] = kind;
    turn.set(body, at + ENTRY_HEADER + 1);
    this.pendingAt = at + entry;
    this.pending++;
    this.recordsInLog++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.scheduledFlush);
    }
  }

  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  /** Makes room for `bytes` more in the turn's buffer, keeping what it holds. */
  private growTurn(bytes: number): void {
    const next = Buffer.allocUnsafe(Math.max(TURN_BYTES, 2 * this.turn.length, this.pendingAt + bytes));
    this.turn.copy(next, 0, 0, this.pendingAt);
    this.turn = next;
  }

  /** Forgets the turn's records (written, or in the window a compaction wrote). */
  private clearTurn(): void {
    this.pendingAt = TURN_ENTRIES_AT;
    this.pending = 0;
  }

  /** Writes the turn's records: one of them as a record of its own, more as one batch record. */
  private writeTurn(): void {
    const turn = this.turn;
    const end = this.pendingAt;
    let start = 0;
    if (this.pending === 1) {
      // [length][crc32] right in front of the entry's kind byte, over its batch header and length.
      const kindAt = TURN_ENTRIES_AT + ENTRY_HEADER;
      start = kindAt - RECORD_HEADER;
      putUint32(turn, start, end - kindAt);
      putUint32(turn, start + 4, crc32(turn.subarray(kindAt, end)));
    } else {
      putUint32(turn, 0, end - RECORD_HEADER);
      turn[RECORD_HEADER] = KIND_BATCH;
      putUint32(turn, 4, crc32(turn.subarray(RECORD_HEADER, end)));
    }
    this.clearTurn();
    // A buffer a burst made larger is let go; a turn's one is reused (the write has copied it).
    if (turn.length > TURN_BYTES) this.turn = Buffer.alloc(0);
    if (this.fd === undefined) return;
    // Kept in memory: a rewrite of the window writes them once writes work again.
    if (this.writeFailure !== undefined) {
      this.retryWrite();
      return;
    }
    try {
      for (let written = start; written < end;) written += writeSync(this.fd, turn, written, end - written);
    } catch (err) {
      this.failed(err);
      return;
    }
    const compaction = this.compacting;
    if (compaction !== undefined && !compaction.cancelled) {
      // For the compaction's file too. A copy of the turn's buffer, which the next turn fills again;
      // a burst's larger buffer is let go (above), so a view of it is enough.
      const record = turn === this.turn ? Buffer.from(turn.subarray(start, end)) : turn.subarray(start, end);
      compaction.tail.push(record);
      compaction.tailBytes += record.length;
      if (
        this.recordsInLog - compaction.recordsAtStart > compaction.records &&
        compaction.tailBytes > MAX_TAIL_BYTES_FLOOR
      ) {
        this.cancelCompaction();
      }
    }
  }

  /** Notes a failed write (see {@link onWriteFailure}); rethrows anything but a system error. */
  private failed(err: unknown): void {
    if (!isSystemError(err)) throw err;
    // The log misses what is kept in memory from now on: a routine compaction in flight could not
    // catch up with it. The retries rewrite the window (compactOrFail).
    this.cancelCompaction();
    this.retryAt = this.now() + WRITE_RETRY_MS;
    if (this.writeFailure !== undefined) return;
    this.writeFailure = err;
    if (this.dir !== undefined) {
      touchMark(join(this.dir, UNSAVED_FILE));
    }
    this.onWriteFailure?.(err);
  }

  /**
   * While writes fail (its only use): rewrites the log as its meta record(s) plus the window,
   * atomically, on the event loop ({@link replaceLog}, {@link useCompacted}): a rewrite is what tells
   * that writing works again, and its success ends the failure once the `seq` file is written too.
   * A failure is noted as a failed write. The start's compaction is {@link open}'s; the routine one
   * runs in the background ({@link startCompaction}).
   */
  private compactOrFail(): void {
    const dir = this.dir;
    if (dir === undefined) return; // no writes, so none failed
    try {
      this.useCompacted(dir, this.replaceLog(dir));
      this.writeReserved(dir);
      rmSync(join(dir, UNSAVED_FILE), { force: true });
    } catch (err) {
      this.failed(err);
      return;
    }
    this.writeFailure = undefined;
    this.onWriteFailure?.(undefined);
  }

  /**
   * A rewrite of the log as its meta record(s) plus the window: a temporary file, synced to disk,
   * renamed over the log, and the directory synced (see {@link renameOver}).
   * Returns the records written. A failure leaves the log on disk as it was, its file removed.
   */
  private replaceLog(dir: string): number {
    this.cancelCompaction(); // one at a time: this one writes the window as it is now
    const path = join(dir, LOG_FILE);
    const tmp = `${path}.tmp`;
    const metas = this.metas();
    const parts: Uint8Array[] = [];
    let bytes = 0;
    for (const meta of metas) bytes += this.metaRecord(parts, meta);
    for (let i = this.orderStart; i < this.order.length; i++) {
      const message = this.order[i]!;
      bytes += this.messageRecord(parts, message);
    }
    renameOver(openSync(tmp, 'w', 0o600), tmp, path, parts, bytes);
    return this.size + metas.length;
  }

  /** The rest of a rewrite ({@link replaceLog}): the log just renamed over (`records` in it) appended to from now on. */
  private useCompacted(dir: string, records: number): void {
    this.clearTurn(); // the window just written holds them
    this.useNewLog(join(dir, LOG_FILE), records);
    this.compacted();
  }

  /**
   * The compaction at the start failed on its own file, `err` a system error (a disk without room
   * for a second copy of the window, no descriptor left): the node starts on the log as it is
   * instead, as after a routine compaction that failed (see {@link onCompactionFailure}), rather
   * than not at all. Its file is removed; the log is opened for appending, first cut back to its
   * last whole record if the start dropped a damaged tail (a truncation needs no room on the disk;
   * synced, so no record is appended after that tail on disk), and due for a compaction, tried
   * after the backoff. On disk the log stays one the next start reads whole, only longer than the
   * window. `mark`: the start raised its own numbering above what the log holds (which the start's
   * compaction would have written in its meta record), so the `unsaved` mark keeps the next start
   * from going back below it. Should the mark or the log fail too, `err` is thrown: no start.
   */
  private keepLog(dir: string, err: NodeJS.ErrnoException, mark: boolean): void {
    const path = join(dir, LOG_FILE);
    rmQuietly(`${path}.tmp`);
    if (mark && !touchMark(join(dir, UNSAVED_FILE))) throw err;
    let fd: number;
    try {
      fd = openSync(path, 'a', 0o600);
    } catch (openErr) {
      if (!isSystemError(openErr)) throw openErr;
      throw err;
    }
    try {
      if (fstatSync(fd).size > this.loadedBytes) {
        ftruncateSync(fd, this.loadedBytes);
        fsyncSync(fd);
      }
    } catch (cutErr) {
      closeQuietly(fd);
      if (!isSystemError(cutErr)) throw cutErr;
      throw err;
    }
    this.fd = fd;
    this.recordsInLog = this.compactionThreshold() + 1; // due: the start's compaction is what failed
    this.compactionFileFailed(err);
  }

  /**
   * Appends to the log at `path`, just renamed over the one in use, from now on: `records` in it.
   * The new descriptor first: one that failed to open leaves the old one in use, and the old one is
   * forgotten before it is closed, so no later call closes its number again (it may be another
   * file's by then). Then the rename on disk too (where the platform can sync a directory); last,
   * so a failure here leaves the store appending to the new log, and is noted as a failed write.
   */
  private useNewLog(path: string, records: number): void {
    const appending = openSync(path, 'a', 0o600);
    const old = this.fd;
    this.fd = appending;
    this.recordsInLog = records;
    if (old !== undefined) closeQuietly(old);
    if (this.dir !== undefined) syncDir(this.dir);
  }

  /**
   * The routine compaction, once the log holds more than twice the window: what {@link replaceLog}
   * writes, written off the event loop, so a large window (`--history`, up to 1 GB) on a slow disk
   * does not hold up every peer for seconds. The window as it is now, which is what the log holds
   * up to here (the turn's records are written first), goes to {@link NEXT_LOG_FILE} through libuv's
   * thread pool, a chunk at a time, and is synced. Meanwhile records go to the log as ever (a
   * message is passed on once its record is there), and a copy of each write is kept; they are
   * appended to the file in turn (see {@link CATCH_UP_ROUNDS}), and the file replaces the log in one
   * synchronous step with the last of them ({@link finishCompaction}), so no record reaches the old
   * log after the last copy was taken. As with {@link replaceLog}, a crash at any point leaves the old
   * log, or the new one whole: the file is on disk before it is renamed. A failure of its own file
   * leaves the log as it was and taking records: it is removed, and the next compaction waits (see
   * {@link onCompactionFailure}). A failed write to the log, or {@link close}, gives it up
   * ({@link cancelCompaction}).
   */
  private startCompaction(): void {
    if (this.dir === undefined || this.fd === undefined || this.compacting !== undefined) return;
    if (this.pending > 0) this.writeTurn();
    if (this.writeFailure !== undefined) return; // that write failed: the retries rewrite the window
    const log = join(this.dir, LOG_FILE);
    const next = join(this.dir, NEXT_LOG_FILE);
    const metas = this.metas();
    let fd: number;
    try {
      fd = openSync(next, 'w', 0o600);
    } catch (err) {
      this.compactionFileFailed(err);
      return;
    }
    const compaction: Compaction = {
      fd,
      next,
      log,
      records: this.size + metas.length,
      recordsAtStart: this.recordsInLog,
      tail: [],
      tailBytes: 0,
      cancelled: false,
    };
    this.compacting = compaction;
    // The messages, not their records: each chunk's headers are made as it is written.
    const window = this.order.slice(this.orderStart);
    void this.writeNext(compaction, metas, window).then(
      () => this.finishCompaction(compaction),
      (err: unknown) => this.compactionFailed(compaction, err),
    );
  }

  /**
   * The background part of {@link startCompaction}: the window and what came meanwhile, written and
   * synced. Stops after the operation in flight once the compaction is given up.
   */
  private async writeNext(
    compaction: Compaction,
    metas: readonly Meta[],
    window: (StoredMessage | undefined)[],
  ): Promise<void> {
    const { fd } = compaction;
    let parts: Uint8Array[] = [];
    let bytes = 0;
    for (const meta of metas) bytes += this.metaRecord(parts, meta);
    let at = 0;
    do {
      while (at < window.length && bytes < COMPACT_CHUNK_BYTES) {
        const message = window[at]!;
        window[at++] = undefined; // an evicted message is let go once its chunk is written
        bytes += this.messageRecord(parts, message);
      }
      await writevWholeInBackground(fd, parts, bytes);
      if (compaction.cancelled) return;
      parts = [];
      bytes = 0;
    } while (at < window.length);
    await fsyncInBackground(fd);
    for (let round = 0; round < CATCH_UP_ROUNDS && compaction.tail.length > 0; round++) {
      if (compaction.cancelled) return;
      const { tail, tailBytes } = compaction;
      compaction.tail = [];
      compaction.tailBytes = 0;
      await writevWholeInBackground(fd, tail, tailBytes);
      if (compaction.cancelled) return;
      await fsyncInBackground(fd);
    }
  }

  /**
   * The last step of a routine compaction, on the event loop: what was written to the log since the
   * last round, appended and synced, then the file renamed over the log and appended to from now on.
   * Nothing is written to the log in between, so the new log holds every record the old one did.
   */
  private finishCompaction(compaction: Compaction): void {
    this.compacting = undefined; // it, cancelled or not: only one is in flight (see cancelCompaction)
    if (compaction.cancelled) {
      closeQuietly(compaction.fd); // its file is gone already (cancelCompaction)
      return;
    }
    try {
      // Its own file (the rest written to it, synced, renamed): the log is as it was on a failure.
      renameOver(compaction.fd, compaction.next, compaction.log, compaction.tail, compaction.tailBytes);
    } catch (err) {
      this.compactionFileFailed(err);
      return;
    }
    try {
      // The log renamed over: a failure here leaves records going to the old one, or the rename
      // not on disk, so it is a failed write (see useNewLog).
      this.useNewLog(compaction.log, compaction.records + this.recordsInLog - compaction.recordsAtStart);
    } catch (err) {
      this.failed(err);
      return;
    }
    this.compacted();
  }

  /**
   * A routine compaction failed in the background (its file's write or sync): its file is removed,
   * and the failure noted as one of its own file ({@link compactionFileFailed}).
   */
  private compactionFailed(compaction: Compaction, err: unknown): void {
    this.compacting = undefined; // it, cancelled or not (see finishCompaction)
    closeQuietly(compaction.fd); // nothing is in flight on it: what failed has returned
    if (compaction.cancelled) {
      if (!isSystemError(err)) throw err;
      return; // given up already: its file is gone, and what gave it up was reported
    }
    rmQuietly(compaction.next);
    this.compactionFileFailed(err);
  }

  /**
   * Notes a failure of a routine compaction's own file, removed by then (see
   * {@link onCompactionFailure}): the log still takes records, so this is no failed write; the next
   * compaction waits its backoff. Rethrows anything but a system error.
   */
  private compactionFileFailed(err: unknown): void {
    if (!isSystemError(err)) throw err;
    this.compactBackoffMs =
      this.compactBackoffMs === 0
        ? COMPACT_RETRY_MS
        : Math.min(2 * this.compactBackoffMs, COMPACT_RETRY_MAX_MS);
    this.compactFailedAt = this.now();
    // Told once a streak, and again when its error changes: what the disk lacks now is what to fix.
    if (this.compactionFailure?.code === err.code) return;
    this.compactionFailure = err;
    this.onCompactionFailure?.(err);
  }

  /** Records in the log past which a routine compaction starts: about twice the window. */
  private compactionThreshold(): number {
    return 2 * this.maxMessages + 1;
  }

  /** Whether a routine compaction may start: none failed, or its backoff is over (or the clock went back). */
  private compactionDue(): boolean {
    if (this.compactBackoffMs === 0) return true;
    const now = this.now();
    return now >= this.compactFailedAt + this.compactBackoffMs || now < this.compactFailedAt;
  }

  /** A compaction (either kind) replaced the log: the next one starts when the log is due, and a run of failures is over. */
  private compacted(): void {
    this.compactBackoffMs = 0;
    if (this.compactionFailure === undefined) return;
    this.compactionFailure = undefined;
    this.onCompactionFailure?.(undefined);
  }

  /**
   * Gives up the routine compaction in flight, if any: its file is removed now, its descriptor
   * closed once the operation in flight returns ({@link finishCompaction}, {@link compactionFailed}).
   * Until then it stays {@link compacting}, so no other starts in the background.
   */
  private cancelCompaction(): void {
    const compaction = this.compacting;
    if (compaction === undefined || compaction.cancelled) return;
    compaction.cancelled = true;
    compaction.tail = [];
    compaction.tailBytes = 0;
    rmQuietly(compaction.next);
  }
}

/**
 * Ends the writing of `file` through `fd` (closed here, whatever happens) with `parts` (`bytes` in
 * all; none: what is there is synced already) and renames it over `log`: synced before, as renamed
 * first a crash of the machine could leave a log with records missing or zeroed (their data not
 * yet written) in place of the old one. On a failure `file` is removed and the error thrown.
 */
function renameOver(
  fd: number,
  file: string,
  log: string,
  parts: readonly Uint8Array[],
  bytes: number,
): void {
  let fdOpen = true;
  try {
    if (parts.length > 0) {
      writevWhole(fd, parts, bytes);
      fsyncSync(fd);
    }
    fdOpen = false;
    closeSync(fd);
    renameSync(file, log);
  } catch (err) {
    if (fdOpen) closeQuietly(fd);
    rmQuietly(file);
    throw err;
  }
}

/** The error of a write that stopped part way: a full disk reports what it wrote, not an error. */
function shortWrite(written: number, bytes: number): Error {
  return Object.assign(new Error(`wrote ${written} of ${bytes} bytes of the history`), { code: SHORT_WRITE });
}

/**
 * Writes `parts` (`bytes` in all) at the file's position; a compaction's file that a full disk cut
 * short would replace the log with part of the window, so that is an error.
 */
function writevWhole(fd: number, parts: readonly Uint8Array[], bytes: number): void {
  const written = writevSync(fd, parts);
  if (written !== bytes) throw shortWrite(written, bytes);
}

/** {@link writevWhole} on libuv's thread pool (Node's asynchronous writev). */
function writevWholeInBackground(fd: number, parts: readonly Uint8Array[], bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    writev(fd, parts, (err, written) => {
      if (err !== null) reject(err);
      else if (written !== bytes) reject(shortWrite(written, bytes));
      else resolve();
    });
  });
}

/** fsync on libuv's thread pool. */
function fsyncInBackground(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err !== null ? reject(err) : resolve()));
  });
}

/** Closes a descriptor that is done with. Linux frees the descriptor even when close reports an error. */
function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // nothing more to do with it
  }
}

/**
 * Why the record body of `length` bytes at `at` of the log is damage, or undefined when it checks out
 * against its checksum `sum`: for a record over {@link MAX_RECORD_BYTES}, which only a build before
 * that limit wrote (a compaction's single meta record of some 100,000 senders or more, or a turn of
 * that many bytes). Read {@link LOAD_CHUNK} bytes at a time, so nothing as long as the length field
 * says is allocated before the checksum proved it genuine.
 */
function legacyDamage(fd: number, at: number, length: number, sum: number): string | undefined {
  const chunk = Buffer.alloc(Math.min(LOAD_CHUNK, length));
  let crc = 0;
  for (let done = 0; done < length;) {
    const want = Math.min(chunk.length, length - done);
    if (readAt(fd, chunk, want, at + done) < want) return 'the file ends before it'; // it shrank while being read
    // A kind no build wrote is damage at once: no need to read the gigabytes it may claim.
    if (done === 0 && (chunk[0]! < KIND_MESSAGE || chunk[0]! > KIND_BATCH))
      return `its kind byte is ${chunk[0]}`;
    crc = crc32(chunk.subarray(0, want), crc);
    done += want;
  }
  return crc === sum ? undefined : 'its checksum does not match';
}

/**
 * Creates the empty file `path` (a mark: `unsaved`, `reserved-<upTo>`), which needs no data block.
 * Best effort: false when the disk refuses even that; a bug is thrown.
 */
function touchMark(path: string): boolean {
  try {
    closeSync(openSync(path, 'w', 0o600));
    return true;
  } catch (err) {
    if (!isSystemError(err)) throw err;
    return false;
  }
}

/** Removes a temporary file after a failure, keeping that failure the one reported. */
function rmQuietly(path: string): void {
  try {
    rmSync(path, { force: true });
  } catch {
    // the first error is the one to report
  }
}

/**
 * The highest sequence number of a sender held without a gap. A sender whose window starts above 1
 * (older ones evicted elsewhere) counts from its first held.
 */
function markOf(sender: SenderState): number {
  let mark = sender.floor;
  while (sender.held.has(mark + 1)) mark++;
  if (sender.floor === 0 && mark === 0 && sender.held.size > 0) {
    mark = sender.first - 1;
    while (sender.held.has(mark + 1)) mark++;
  }
  return mark;
}

/** A message record of the log, read. */
interface StoredRecord {
  readonly frame: ChatFrame;
  readonly payload: Buffer;
  readonly verified: boolean;
}

/**
 * The message of a record (kind byte + frame).
 * @throws {ProtocolError} for another kind, or a frame that is not a valid chat frame.
 */
function storedRecord(body: Buffer): StoredRecord {
  const kind = body[0];
  if (kind !== KIND_MESSAGE && kind !== KIND_UNVERIFIED)
    throw new ProtocolError('ERR_BAD_FRAME', `unknown record kind ${kind}`);
  const payload = Buffer.from(body.subarray(1));
  const frame = parseFrame(payload);
  if (frame.type !== 'chat')
    throw new ProtocolError('ERR_BAD_FRAME', 'a stored record is not a chat message');
  return { frame, payload, verified: kind === KIND_MESSAGE };
}

function newSender(from: string): SenderState {
  return { from, nick: '', held: new Map(), floor: 0, top: 0, first: 0, newestTs: 0 };
}

/** The fields of a chat frame the history keeps (a copy: nothing else of the frame stays alive). */
export function heldFrame({ id, from, nick, ts, seq, text }: HeldFrame): HeldFrame {
  return { id, from, nick, ts, seq, text };
}

/**
 * Largest buffer a held payload may be a view of. A received payload is a view of the bytes the
 * socket read (decrypted in place), up to 64 KiB that may hold many other frames, and one read at
 * start-up holds the whole log: a view of those is copied when it is kept, so a held message keeps
 * at most this much memory alive. A payload of Node's pool is kept as it is where the pool is 8 KiB
 * (Node 20, 22); Node 24's is 64 KiB, so there it is copied too.
 */
const MAX_KEPT_BACKING = 16 * 1024;

/**
 * Where such copies are made, one after another, like Node's own 8 KiB pool: a new zeroed slab of
 * MAX_KEPT_BACKING bytes when the next one does not fit. `Buffer.from` per payload went through
 * several argument-checking wrappers for each message (5 % of a mesh3 receiver's busy time in a
 * burst); this is one copy and one view. Messages leave the history about in the order they came,
 * so a slab is freed soon after its last message is evicted.
 */
let keptSlab = Buffer.alloc(0);
let keptAt = 0;

function keepable(payload: Buffer): Buffer {
  if (payload.buffer.byteLength <= MAX_KEPT_BACKING) return payload;
  const length = payload.length;
  if (length > MAX_KEPT_BACKING / 4) {
    // A long message: a copy of its own. Not Buffer.from, which takes anything under half of Node's
    // pool from the pool: under 32 KiB on Node 24, a copy that would keep 64 KiB alive.
    const own = Buffer.alloc(length);
    own.set(payload);
    return own;
  }
  if (keptAt + length > keptSlab.length) {
    keptSlab = Buffer.alloc(MAX_KEPT_BACKING);
    keptAt = 0;
  }
  keptSlab.set(payload, keptAt);
  const kept = keptSlab.subarray(keptAt, keptAt + length);
  keptAt += length;
  return kept;
}
