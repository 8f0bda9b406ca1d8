import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { crc32 } from 'node:zlib';
import { describe, it, type TestContext } from 'node:test';
import fc from 'fast-check';
import { encodeChat, parseFrame, serializeFrame, type ChatFrame } from '../../lib/protocol/frames.js';
import {
  COMPACT_RETRY_MAX_MS,
  COMPACT_RETRY_MS,
  MAX_PAYLOAD_BYTES,
  MAX_RECORD_BYTES,
  MessageStore,
  WRITE_RETRY_MS,
  type HistoryWindow,
  type StoreRepair,
} from '../../lib/store/message-store.js';
import { tempDir } from '../helpers/temp.js';

// For the memory specs: gc() in a fresh context sees the flag (set before that context exists).
setFlagsFromString('--expose-gc');

const SELF = 'me';
/** The clock of every store here: the frames' timestamps are well inside the default 7-day window. */
const T0 = 1_000_000;
const clock = (): number => T0;
const LOG = 'messages.log';
/**
 * Whether the system tells its boot id (Linux's /proc), as the store reads it: what tells a kill from
 * a restart of the machine. Without it, every start may follow a restart.
 */
const HAS_BOOT_ID = ((): boolean => {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim() !== '';
  } catch {
    return false;
  }
})();

/**
 * Well-formed signing fields. The store keeps frames as they are; checking signatures is the node's
 * job (the verify operator), so dummies of the right shape do here.
 */
const SIGNED = { key: 'ab'.repeat(32), sig: 'A'.repeat(86) };

/** A chat frame of `from` with sequence number `seq`; its id names both, so ids are unique per message. */
function chat(from: string, seq: number, ts = T0, text = `${from} #${seq}`): ChatFrame {
  return { type: 'chat', id: `${from}-${seq}`, from, nick: from, ts, seq, text, ...SIGNED };
}

/** Adds a frame with its payload as the wire carries it. */
const add = (store: MessageStore, frame: ChatFrame): boolean => store.add(frame, serializeFrame(frame));

/** The payload {@link add} gives for the frame `chat(from, seq)` with id `from-seq`. */
/** Writes a log of `count` messages from 'a' (one flushed record each) in `dir`, then closes it. */
function writeLog(dir: string, count: number): void {
  const store = MessageStore.open(SELF, dir, {}, clock).store;
  for (let seq = 1; seq <= count; seq++) {
    add(store, chat('a', seq));
    store.flush();
  }
  store.close();
}

const payloadOf = (id: string): Buffer => {
  const [from, seq] = id.split('-');
  return serializeFrame(chat(from!, Number(seq)));
};

/** Ids of the messages held, oldest first. */
const ids = (store: MessageStore, n = 1_000_000): string[] => store.recent(n).map((m) => m.frame.id);

/** Opens a store and closes it after the test (close is idempotent). */
function open(
  t: TestContext,
  dir: string | undefined,
  window: HistoryWindow = {},
  now: () => number = clock,
): ReturnType<typeof MessageStore.open> {
  const opened = MessageStore.open(SELF, dir, window, now);
  t.after(() => opened.store.close());
  return opened;
}

/** Reopens the store of `dir` (closed by now): nothing to repair, and it holds `want`. */
function reopensWhole(
  t: TestContext,
  dir: string,
  window: HistoryWindow,
  want: readonly string[],
  message?: string,
): void {
  const reopened = open(t, dir, window);
  assert.equal(reopened.repair, undefined, message);
  assert.deepEqual(ids(reopened.store), want);
}

/** The inode of the log in `dir`: a compaction renames another file over the log. */
const logInode = (dir: string): number => statSync(join(dir, LOG)).ino;

/** The file a routine compaction writes in the background, renamed over the log once it is whole. */
const NEXT = `${LOG}.next`;

/** One turn of the event loop: the I/O callbacks of the turn have run when it resolves. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Mocks fs.openSync for the test `t` (all fs mocks restored after it): each descriptor opened is
 * named by `name(file)` in the returned map, and each open of a file named other than 'other' is
 * noted in `calls`.
 */
function nameOpens(t: TestContext, name: (file: string) => string, calls: string[]): Map<number, string> {
  const names = new Map<number, string>();
  const openSync = fs.openSync;
  t.after(() => {
    t.mock.restoreAll();
    syncBuiltinESMExports();
  });
  t.mock.method(fs, 'openSync', (file: string, flags: string, mode?: number): number => {
    const fd = openSync(file, flags, mode);
    names.set(fd, name(file));
    if (name(file) !== 'other') calls.push(`open ${name(file)}`);
    return fd;
  });
  return names;
}

/**
 * Lets the event loop turn until `done()` (at most 100,000 turns and 20 s), calling `each` before
 * every turn. Returns how many turns that took.
 */
async function turnsUntil(done: () => boolean, what: string, each?: () => void): Promise<number> {
  const deadline = Date.now() + 20_000;
  let turns = 0;
  while (!done()) {
    if (turns >= 100_000 || Date.now() > deadline) assert.fail(`${what}: not after ${turns} turns`);
    each?.();
    await nextTurn();
    turns++;
  }
  return turns;
}

/**
 * Whether `store` has a routine compaction in flight, or one given up whose write has not returned
 * yet (its descriptor still open): what tells a test that every write of it is over.
 */
const compacting = (store: MessageStore): boolean =>
  (store as unknown as { compacting: unknown }).compacting !== undefined;

/**
 * A store of window `maxMessages` in a fresh directory, whose log holds two windows of messages of
 * about 1 KB ('a' 1 to 2 × `maxMessages`): one record more and it holds more than twice the window,
 * which starts a compaction. `ino` is the log's inode.
 */
function fullLog(
  t: TestContext,
  maxMessages: number,
  now: () => number = clock,
): { dir: string; store: MessageStore; ino: number } {
  const dir = tempDir(t, 'store');
  const store = MessageStore.open(SELF, dir, { maxMessages }, now).store;
  t.after(() => store.close());
  const ino = logInode(dir);
  for (let seq = 1; seq <= 2 * maxMessages; seq++) {
    add(store, chat('a', seq, T0, `message ${seq} `.padEnd(1_000, 'x')));
  }
  store.flush();
  assert.equal(logInode(dir), ino, 'no compaction yet');
  return { dir, store, ino };
}

/**
 * The ids a store holds once it opens a copy of the log of `dir` as it is now (what a kill -9 now
 * would leave), and what its opening dropped as damaged.
 */
function idsOfCopy(
  t: TestContext,
  dir: string,
  window: HistoryWindow,
): { ids: string[]; repair: StoreRepair | undefined } {
  const copy = tempDir(t, 'store');
  writeFileSync(join(copy, LOG), readFileSync(join(dir, LOG)));
  const opened = MessageStore.open(SELF, copy, window, clock);
  opened.store.close();
  return { ids: ids(opened.store), repair: opened.repair };
}

/** Byte offsets at which each record of a log starts, and the offset of its end. */
function recordStarts(log: Buffer): { starts: number[]; end: number } {
  const starts: number[] = [];
  let offset = 0;
  while (offset + 8 <= log.length) {
    const length = log.readUInt32BE(offset);
    if (offset + 8 + length > log.length) break;
    starts.push(offset);
    offset += 8 + length;
  }
  return { starts, end: offset };
}

/** The own sequence numbers reserved in the `seq` file of `dir` (its first line). */
const reservedIn = (dir: string): number => Number(readFileSync(join(dir, 'seq'), 'utf8').split('\n')[0]);

/** The kind byte of the record at `start`: 1 a message, 2 the meta record. */
const kindAt = (log: Buffer, start: number): number => log[start + 8]!;

/** A record of the log: `[u32 length][u32 crc32][kind byte + body]`. */
function recordOf(kind: number, body: Uint8Array): Buffer {
  const record = Buffer.alloc(8 + 1 + body.length);
  record.writeUInt32BE(1 + body.length, 0);
  record[8] = kind;
  record.set(body, 9);
  record.writeUInt32BE(crc32(record.subarray(8)), 4);
  return record;
}

/** The floor of sender `i` in {@link legacyMeta}. */
const floorOf = (i: number): number => 1 + (i % 5_000);

let legacy: { meta: Buffer; senders: string[] } | undefined;

/**
 * The single meta record a build before the longest record's limit wrote at a compaction: 110,000
 * senders with ids of 64 hex characters, a floor and a timestamp each (~17 MB, over
 * {@link MAX_RECORD_BYTES}), and own last number 42. Made once.
 */
function legacyMeta(): { meta: Buffer; senders: string[] } {
  if (legacy !== undefined) return legacy;
  const senders = Array.from({ length: 110_000 }, (_, i) => i.toString(16).padStart(64, '0'));
  // The JSON that build's JSON.stringify gave, put together as text: objects of 110,000 keys each
  // took as long to build as the store takes to read them.
  const floors = senders.map((from, i) => `"${from}":${floorOf(i)}`).join(',');
  const seen = senders.map((from, i) => `"${from}":${1_700_000_000_000 + i}`).join(',');
  const json = `{"lastSeq":42,"floors":{${floors}},"seen":{${seen}}}`;
  const meta = recordOf(2, Buffer.from(json));
  assert.ok(meta.readUInt32BE(0) > MAX_RECORD_BYTES, 'a record over the longest record');
  legacy = { meta, senders };
  return legacy;
}

describe('MessageStore', () => {
  describe('in memory', () => {
    it('adds a new message once and knows it afterwards', (t) => {
      const { store, repair } = open(t, undefined);
      assert.equal(repair, undefined);
      const a1 = chat('a', 1);
      assert.equal(store.knows(a1), false);
      assert.equal(add(store, a1), true);
      assert.equal(store.knows(a1), true);
      assert.equal(add(store, a1), false, 'a second copy is not added');
      assert.equal(store.size, 1);
      assert.deepEqual(ids(store), ['a-1']);
    });

    it('counts the messages held whose payload is longer than a limit, and the longest, evicted ones aside', (t) => {
      const { store } = open(t, undefined, { maxMessages: 3 });
      assert.deepEqual(store.longerThan(0), { count: 0, longest: 0 }, 'empty');
      const sizes = [12_000, 300, 9_000, 7_000, 100];
      sizes.forEach((size, i) => add(store, chat('a', i + 1, T0, 'x'.repeat(size))));
      const held = [9_000, 7_000, 100].map(
        (size, i) => serializeFrame(chat('a', i + 3, T0, 'x'.repeat(size))).length,
      );
      assert.deepEqual(
        store.longerThan(8 * 1024),
        { count: 1, longest: held[0] },
        'the 12,000 one was evicted',
      );
      assert.deepEqual(store.longerThan(held[1]! - 1), { count: 2, longest: held[0] });
      assert.deepEqual(
        store.longerThan(held[0]!),
        { count: 0, longest: 0 },
        'a payload of exactly the limit fits',
      );
    });

    it('does not know a message of a sender it never heard of', (t) => {
      const { store } = open(t, undefined);
      add(store, chat('a', 1));
      assert.equal(store.knows(chat('b', 1)), false);
      assert.equal(store.knows(chat('a', 2)), false);
    });

    it('marks per sender the highest sequence number held without a gap', (t) => {
      const { store } = open(t, undefined);
      for (const seq of [1, 2, 3, 5]) add(store, chat('a', seq));
      for (const seq of [1, 2]) add(store, chat('b', seq));
      assert.deepEqual(
        store.marks(),
        new Map([
          ['a', 3],
          ['b', 2],
        ]),
      );
      add(store, chat('a', 4));
      assert.equal(store.marks().get('a'), 5, 'the gap is filled');
    });

    it('says when the message before one just added is missing: a hole, not what came before the first held', (t) => {
      const { store } = open(t, undefined);
      /** Adds a message of `from`, then asks about it. */
      const missesBefore = (seq: number, from = 'a'): boolean => {
        add(store, chat(from, seq));
        return store.missesBefore(chat(from, seq));
      };
      assert.equal(missesBefore(4), false, "a sender's first message: what came before it is history");
      assert.equal(missesBefore(5), false);
      assert.equal(missesBefore(7), true, '6 is missing');
      assert.equal(missesBefore(6), false, 'the hole is filled');
      assert.equal(store.missesBefore(chat('a', 7)), false);
      assert.equal(store.missesBefore(chat('b', 9)), false, 'a sender never heard of');
      assert.equal(store.marks().get('a'), 7, 'as marks() counts: from the first held');
      add(store, chat('b', 100));
      add(store, chat('b', 101));
      assert.equal(missesBefore(50, 'b'), false, 'below the first held, with later ones held: history');
      assert.equal(missesBefore(60, 'b'), true, 'now 50 is the first held, and 59 is missing');
    });

    it('finds the first hole of any sender, not what came before the first held', (t) => {
      const { store } = open(t, undefined);
      assert.equal(store.firstHole(), undefined, 'an empty store');
      for (const seq of [3, 4]) add(store, chat('a', seq));
      for (const seq of [1, 2, 4, 7]) add(store, chat('b', seq));
      assert.deepEqual(store.firstHole(), { from: 'b', seq: 3 });
      assert.equal(
        store.firstHole((from) => from === 'b'),
        undefined,
        'a sender passed over',
      );
      add(store, chat('b', 3));
      assert.deepEqual(store.firstHole(), { from: 'b', seq: 5 });
      for (const seq of [5, 6]) add(store, chat('b', seq));
      assert.equal(store.firstHole(), undefined);
    });

    it('does not count as missing what is older than the evicted floor', (t) => {
      const { store } = open(t, undefined, { maxMessages: 2 });
      for (const seq of [1, 2, 3]) add(store, chat('a', seq)); // 1 is evicted: the floor is 1
      assert.equal(store.missesBefore(chat('a', 2)), false);
      add(store, chat('a', 6)); // 2 is evicted now; 4 and 5 are missing
      assert.equal(store.missesBefore(chat('a', 6)), true);
    });

    it('offers a peer what it lacks, per sender in sequence order, all of a sender it does not list', (t) => {
      const { store } = open(t, undefined);
      // Arrival order mixes senders and sequence numbers.
      for (const [from, seq] of [
        ['a', 2],
        ['b', 1],
        ['a', 1],
        ['a', 3],
        ['b', 2],
      ] as const)
        add(store, chat(from, seq));
      const lacking = store.lacking(new Map([['a', 1]])).map((m) => m.frame.id);
      assert.deepEqual(
        lacking.filter((id) => id.startsWith('a-')),
        ['a-2', 'a-3'],
      );
      assert.deepEqual(
        lacking.filter((id) => id.startsWith('b-')),
        ['b-1', 'b-2'],
      );
      assert.deepEqual(
        store.lacking(
          new Map([
            ['a', 3],
            ['b', 2],
          ]),
        ),
        [],
        'nothing for a peer that holds everything',
      );
    });

    it('hands out the payload bytes exactly as they were added, and keeps of the frame what is shown', (t) => {
      const { store } = open(t, undefined);
      const frame = chat('a', 1);
      const payload = serializeFrame(frame);
      store.add(frame, payload);
      const [held] = store.lacking(new Map());
      assert.ok(held !== undefined);
      assert.deepEqual(held.payload, payload);
      const { id, from, nick, ts, seq, text } = frame;
      assert.deepEqual(held.frame, { id, from, nick, ts, seq, text }, 'no key, signature or proof');
      assert.deepEqual(parseFrame(held.payload), frame, 'those are in the payload');
    });

    it('copies a payload that is a view of a large buffer (a socket read) when it keeps it, and keeps one in a small buffer as it is', (t) => {
      const { store } = open(t, undefined);
      const a = chat('a', 1);
      const read = Buffer.alloc(64 * 1024); // one socket read, holding this frame among others
      const bytes = serializeFrame(a);
      bytes.copy(read, 1000);
      store.add(a, read.subarray(1000, 1000 + bytes.length));
      const b = chat('b', 1);
      // In a buffer of its own (Node's pool is 8 KiB on Node 20 and 22, but 64 KiB on Node 24).
      const small = Buffer.alloc(serializeFrame(b).length);
      small.set(serializeFrame(b));
      store.add(b, small);
      const [heldA, heldB] = store.lacking(new Map());
      assert.ok(heldA !== undefined && heldB !== undefined);
      assert.deepEqual(heldA.payload, bytes);
      assert.notEqual(heldA.payload.buffer, read.buffer, 'the 64 KiB read is not kept alive');
      assert.ok(heldA.payload.buffer.byteLength <= 16 * 1024);
      assert.equal(heldB.payload, small, 'a payload in a small buffer is kept as it is');
    });

    it('copies many views of large reads into slabs of at most 16 KiB, each copy its own bytes, and a long one alone', (t) => {
      const { store } = open(t, undefined);
      const read = Buffer.alloc(64 * 1024);
      const frames = Array.from({ length: 120 }, (_, i) =>
        chat('c', i + 1, T0, `line ${i} `.repeat(1 + (i % 9))),
      );
      const payloads = frames.map((frame) => serializeFrame(frame));
      const long = chat('d', 1, T0, 'x'.repeat(6000));
      const longBytes = serializeFrame(long);
      for (let i = 0; i < frames.length; i++) {
        payloads[i]!.copy(read, 100);
        store.add(frames[i]!, read.subarray(100, 100 + payloads[i]!.length));
        if (i === 60) {
          longBytes.copy(read, 100);
          store.add(long, read.subarray(100, 100 + longBytes.length));
        }
      }
      read.fill(0xff); // the next read reuses nothing of what was kept
      const held = store.lacking(new Map());
      assert.equal(held.length, frames.length + 1);
      const slabs = new Set<ArrayBufferLike>();
      for (const m of held) {
        assert.notEqual(m.payload.buffer, read.buffer);
        if (m.frame.from === 'd') {
          assert.deepEqual(m.payload, longBytes);
          assert.equal(m.payload.buffer.byteLength, longBytes.length, 'a long payload: a copy of its own');
          continue;
        }
        assert.deepEqual(m.payload, payloads[m.frame.seq - 1], `message ${m.frame.seq}`);
        assert.ok(m.payload.buffer.byteLength <= 16 * 1024);
        slabs.add(m.payload.buffer);
      }
      const bytes = payloads.reduce((sum, p) => sum + p.length, 0);
      assert.ok(
        slabs.size <= Math.ceil(bytes / (16 * 1024 - 4096)) + 1,
        `${slabs.size} slabs for ${bytes} bytes`,
      );
    });

    it('returns the last n messages, oldest first', (t) => {
      const { store } = open(t, undefined);
      for (let seq = 1; seq <= 5; seq++) add(store, chat('a', seq));
      assert.deepEqual(ids(store, 3), ['a-3', 'a-4', 'a-5']);
      assert.deepEqual(ids(store, 50), ['a-1', 'a-2', 'a-3', 'a-4', 'a-5']);
      assert.deepEqual(ids(store, 0), []);
    });

    it('keeps at most maxMessages, evicting the oldest to arrive', (t) => {
      const { store } = open(t, undefined, { maxMessages: 3 });
      for (let seq = 1; seq <= 5; seq++) add(store, chat('a', seq));
      assert.equal(store.size, 3);
      assert.deepEqual(ids(store), ['a-3', 'a-4', 'a-5']);
      assert.deepEqual(store.marks(), new Map([['a', 5]]));
      assert.deepEqual(
        store.lacking(new Map()).map((m) => m.frame.id),
        ['a-3', 'a-4', 'a-5'],
        'only the window is offered',
      );
      assert.deepEqual(
        ['a-1', 'a-2', 'a-3', 'a-5', 'b-1'].map((id) => store.holdsCopy(id, payloadOf(id))),
        [false, false, true, true, false],
        'copies of the held messages only',
      );
      // Another sender's message under a held id is not a copy of it.
      assert.equal(store.holdsCopy('a-3', serializeFrame({ ...chat('x', 3), id: 'a-3' })), false);
    });

    it('lets go of an evicted message: the arrival order kept every one until more than half of it was evicted', async (t) => {
      const { store } = open(t, undefined, { maxMessages: 10 });
      const firstHeld = (): WeakRef<object> => {
        add(store, chat('a', 1));
        return new WeakRef(store.recent(1)[0]!);
      };
      const first = firstHeld();
      for (let seq = 2; seq <= 100; seq++) add(store, chat('a', seq));
      assert.deepEqual(ids(store, 1), ['a-100']);
      assert.equal(store.knows(chat('a', 1)), true, 'known as older than the floor, not held');
      await new Promise(setImmediate); // a WeakRef's target lives to the end of the job that made it
      (runInNewContext('gc') as () => void)();
      assert.equal(first.deref(), undefined, 'collected');
    });

    it("holds two senders' messages under one id, each its own (ids are unique per sender only)", (t) => {
      const { store } = open(t, undefined, { maxMessages: 2 });
      const mine = chat('a', 1);
      const squatter = { ...chat('b', 1), id: 'a-1' };
      assert.equal(add(store, squatter), true);
      assert.equal(add(store, mine), true, 'not taken for a copy of the other');
      assert.equal(store.size, 2);
      assert.equal(store.holdsCopy('a-1', serializeFrame(squatter)), true);
      assert.equal(store.knows(mine), true);
      add(store, chat('c', 1)); // evicts the squatter
      assert.equal(store.holdsCopy('a-1', serializeFrame(squatter)), false);
      assert.equal(store.knows(mine), true, 'the other is still held');
    });

    it('keeps messages no older than maxAgeMs, by their timestamps (injected clock)', (t) => {
      let now = 10_000;
      const { store } = open(t, undefined, { maxAgeMs: 1_000 }, () => now);
      assert.equal(add(store, chat('a', 1, 8_999)), false, 'already too old when it arrives');
      assert.equal(add(store, chat('a', 2, 9_000)), true, 'exactly maxAgeMs old is kept');
      assert.equal(add(store, chat('a', 3, 9_500)), true);
      now = 10_200; // a-2 is now 1,200 ms old
      assert.equal(add(store, chat('b', 1, 10_100)), true);
      assert.deepEqual(ids(store), ['a-3', 'b-1']);
      assert.equal(store.knows(chat('a', 2, 9_000)), true, 'an evicted message stays known');
    });

    it('recognises a message older than the evicted floor of its sender, one it never held', (t) => {
      // Replay safety: the old message's id would have left any LRU long ago, and this store never
      // held it (it was sent while we were away), yet it is older than what we evicted.
      const { store } = open(t, undefined, { maxMessages: 2 });
      for (const seq of [5, 6, 7, 8]) add(store, chat('a', seq));
      assert.deepEqual(ids(store), ['a-7', 'a-8']);
      const replayed = chat('a', 3);
      assert.equal(store.knows(replayed), true);
      assert.equal(add(store, replayed), false);
      assert.equal(add(store, chat('a', 6)), false, 'an evicted one is not taken back');
      assert.equal(add(store, chat('a', 9)), true, 'a newer one is');
      assert.equal(store.knows(chat('b', 3)), false, 'floors are per sender');
    });

    it('marks a sender at its floor when the message right above the floor is missing', (t) => {
      // a4 was never received (sent while away), a5.. came live; a1..a3 were evicted. A peer that
      // still holds a4 must be asked for it: the mark has to stay at 3.
      const { store } = open(t, undefined, { maxMessages: 3 });
      for (const seq of [1, 2, 3, 5, 6, 7]) add(store, chat('a', seq));
      assert.equal(store.knows(chat('a', 4)), false, 'a4 would still be taken');
      assert.equal(store.marks().get('a'), 3);
    });

    it('lists senders in the order of their latest message, the most recent last (what a sync frame that must leave some out keeps)', (t) => {
      const { store } = open(t, undefined);
      for (const [from, seq] of [
        ['a', 1],
        ['b', 1],
        ['c', 1],
        ['a', 2],
        ['b', 2],
      ] as const)
        add(store, chat(from, seq));
      assert.deepEqual([...store.marks().keys()], ['c', 'a', 'b']);
    });

    it('forgets a sender nothing of which is held once its newest message is older than maxAgeMs, in memory and in the log', async (t) => {
      let now = 10_000;
      const dir = tempDir(t, 'store');
      const { store } = open(t, dir, { maxMessages: 1, maxAgeMs: 1_000 }, () => now);
      add(store, chat('a', 5, 9_900));
      add(store, chat('b', 1, 9_950)); // evicts a-5: a's floor is 5, nothing of a held
      assert.deepEqual(
        [...store.marks()],
        [
          ['a', 5],
          ['b', 1],
        ],
      );
      assert.equal(add(store, chat('a', 4, 9_890)), false, 'while a is recent, its floor guards it');
      now = 10_950; // a's newest message, a-5, is 1,050 ms old; b-1 is 1,000 ms old
      assert.deepEqual([...store.marks()], [['b', 1]], 'a forgotten, b held');
      assert.equal(add(store, chat('a', 4, 9_890)), false, 'an old message of a is still refused: too old');
      assert.equal(store.knows(chat('a', 4, 9_890)), true, 'and known as such, for the cheap first check');
      assert.equal(store.knows(chat('a', 6, 10_900)), false, 'a new one of a is not');
      for (let seq = 2; seq <= 5; seq++) add(store, chat('b', seq, 10_950)); // compacts the log
      await turnsUntil(() => !compacting(store), 'the compaction');
      store.close();
      const meta = readFileSync(join(dir, LOG), 'utf8');
      assert.match(meta, /"floors":\{"b":\d+\}/, 'only b has a floor in the meta record');
      assert.doesNotMatch(meta, /"a":/);
    });

    it('offers no message older than maxAgeMs, even one that came late and is not evicted yet', (t) => {
      let now = 10_000;
      const { store } = open(t, undefined, { maxAgeMs: 1_000 }, () => now);
      add(store, chat('a', 1, 10_000));
      add(store, chat('b', 1, 9_100)); // old already, but in the window: arrived after a-1
      assert.deepEqual(ids(store), ['a-1', 'b-1']);
      now = 10_200; // b-1 is 1,100 ms old: a peer would refuse it
      assert.deepEqual(
        store.lacking(new Map()).map((m) => m.frame.id),
        ['a-1'],
      );
    });

    it('returns no message older than maxAgeMs among the last n, even one that came late and is not evicted yet', (t) => {
      let now = 10_000;
      const { store } = open(t, undefined, { maxAgeMs: 1_000 }, () => now);
      add(store, chat('a', 1, 10_000));
      add(store, chat('b', 1, 9_100)); // old already, but in the window: arrived after a-1
      add(store, chat('a', 2, 10_000));
      assert.deepEqual(ids(store), ['a-1', 'b-1', 'a-2']);
      now = 10_200; // b-1 is 1,100 ms old: past the age, behind a-1 in the arrival order
      assert.deepEqual(ids(store), ['a-1', 'a-2']);
      assert.deepEqual(
        store.recent(2).map((m) => m.frame.id),
        ['a-1', 'a-2'],
        'the last two within the age',
      );
      assert.equal(store.knows(chat('b', 1, 9_100)), true, 'still known');
    });

    it('does not return messages that aged out of the window while nothing arrived', (t) => {
      let now = 10_000;
      const { store } = open(t, undefined, { maxAgeMs: 1_000 }, () => now);
      add(store, chat('a', 1, 9_500));
      now = 20_000;
      assert.deepEqual(ids(store), []);
      assert.deepEqual(store.lacking(new Map()), []);
    });

    it('gives this node fresh sequence numbers from 1', (t) => {
      const { store } = open(t, undefined);
      assert.equal(store.ownSeq, 0, 'none given yet');
      assert.deepEqual([store.nextSeq(), store.nextSeq(), store.nextSeq()], [1, 2, 3]);
      assert.equal(store.ownSeq, 3, 'the last one given');
    });

    it('goes on after the highest own sequence number it holds', (t) => {
      const { store } = open(t, undefined);
      add(store, chat(SELF, 41)); // e.g. own messages handed back by a peer
      assert.equal(store.ownSeq, 41);
      assert.equal(store.nextSeq(), 42);
    });

    for (const [name, window] of [
      ['maxMessages 0', { maxMessages: 0 }],
      ['maxMessages 1.5', { maxMessages: 1.5 }],
      ['maxMessages NaN', { maxMessages: Number.NaN }],
      ['maxAgeMs 0', { maxAgeMs: 0 }],
      ['maxAgeMs -1', { maxAgeMs: -1 }],
    ] as const) {
      it(`throws a RangeError for ${name}`, () => {
        assert.throws(() => MessageStore.open(SELF, undefined, window), RangeError);
      });
    }
  });

  describe('on disk', () => {
    it('holds the same messages, marks and floors after close and reopen', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, { maxMessages: 3 }, clock).store;
      for (let seq = 1; seq <= 5; seq++) add(first, chat('a', seq));
      add(first, chat('b', 1));
      const before = { ids: ids(first), marks: first.marks() };
      assert.deepEqual(before.ids, ['a-4', 'a-5', 'b-1']);
      first.close();

      const { store, repair } = open(t, dir, { maxMessages: 3 });
      assert.equal(repair, undefined);
      assert.deepEqual(ids(store), before.ids);
      assert.deepEqual(store.marks(), before.marks);
      assert.equal(store.knows(chat('a', 1)), true, 'the floor of a survives too');
      assert.ok(
        before.ids.every((id) => store.holdsCopy(id, payloadOf(id))),
        'their bytes are held',
      );
      assert.equal(add(store, chat('a', 2)), false);
    });

    it('drops at load what is older than maxAgeMs already, though it came late and younger ones are before it', (t) => {
      const dir = tempDir(t, 'store');
      let now = 10_000;
      const window = { maxAgeMs: 1_000 };
      const first = MessageStore.open(SELF, dir, window, () => now).store;
      add(first, chat('a', 1, 10_000));
      add(first, chat('b', 1, 9_100)); // came late: older than a-1, after it in the log
      add(first, chat(SELF, 7, 9_100)); // an own message handed back late by a peer
      add(first, chat('a', 2, 10_000));
      first.close();
      now = 10_200; // b-1 and me-7 are 1,100 ms old: past the age; a-1 and a-2 are not
      const { store, repair } = open(t, dir, window, () => now);
      assert.equal(repair, undefined);
      assert.equal(store.size, 2, 'held: a-1 and a-2 only');
      assert.deepEqual(ids(store), ['a-1', 'a-2']);
      assert.equal(store.knows(chat('b', 1, 9_100)), true, 'what was dropped is still known');
      assert.equal(store.marks().get('a'), 2);
      assert.equal(store.firstHole(), undefined, 'no hole where b-1 was');
      assert.equal(store.nextSeq(), 8, 'own numbers go on above the one dropped');
    });

    it('keeps a message that arrived after a later one of its sender was evicted, across reopens', (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 2 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      add(first, chat('a', 2));
      add(first, chat('a', 1)); // held, below a's floor once a-2 is evicted
      add(first, chat('b', 1)); // evicts a-2: a's floor is 2
      assert.deepEqual(ids(first), ['a-1', 'b-1']);
      const marks = first.marks();
      first.close();
      for (let round = 1; round <= 2; round++) {
        const { store } = open(t, dir, window);
        assert.deepEqual(ids(store), ['a-1', 'b-1'], `reopen ${round}`);
        assert.deepEqual(store.marks(), marks, `reopen ${round}`);
        store.close();
      }
    });

    it('holds the same messages and marks after any number of reopens, whatever order messages came in (property)', (t) => {
      const RUNS = 300;
      const REOPENS = 3;
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.constantFrom('a', 'b', 'c'), fc.integer({ min: 1, max: 12 })), {
            maxLength: 40,
          }),
          fc.integer({ min: 1, max: 6 }),
          fc.integer({ min: 1, max: REOPENS }),
          (arrivals, maxMessages, reopens) => {
            const dir = mkdtempSync(join(tmpdir(), 'p2p-store-'));
            try {
              const window = { maxMessages };
              const first = MessageStore.open(SELF, dir, window, clock).store;
              for (const [from, seq] of arrivals) add(first, chat(from, seq));
              const want = { ids: ids(first), marks: first.marks() };
              first.close();
              for (let round = 1; round <= reopens; round++) {
                const { store } = MessageStore.open(SELF, dir, window, clock);
                const got = { ids: ids(store), marks: store.marks() };
                store.close();
                assert.deepEqual(got, want, `reopen ${round}`);
              }
            } finally {
              rmSync(dir, { recursive: true, force: true });
            }
          },
        ),
        { numRuns: RUNS },
      );
      t.diagnostic(`${RUNS} arrival orders, each reopened up to ${REOPENS} times`);
    });

    it('makes each added message durable within the tick, without close (as for kill -9)', async (t) => {
      const dir = tempDir(t, 'store');
      const { store } = open(t, dir);
      add(store, chat('a', 1));
      add(store, chat('a', 2));
      await Promise.resolve(); // the append is flushed in a microtask, before any I/O callback
      const copy = tempDir(t, 'store');
      writeFileSync(join(copy, LOG), readFileSync(join(dir, LOG))); // what a crash now would leave
      const reopened = MessageStore.open(SELF, copy, {}, clock).store;
      t.after(() => reopened.close());
      assert.deepEqual(ids(reopened), ['a-1', 'a-2']);
    });

    it('writes the bytes it keeps, not the view it was given: a large read filled again before the write loses nothing', async (t) => {
      const dir = tempDir(t, 'store');
      const { store } = open(t, dir);
      const read = Buffer.alloc(64 * 1024);
      const frame = chat('a', 1);
      const bytes = serializeFrame(frame);
      bytes.copy(read, 500);
      store.add(frame, read.subarray(500, 500 + bytes.length));
      read.fill(0x5a); // the next read, before this turn's records are written
      await Promise.resolve();
      const copy = tempDir(t, 'store');
      writeFileSync(join(copy, LOG), readFileSync(join(dir, LOG)));
      const { store: reopened, repair } = MessageStore.open(SELF, copy, {}, clock);
      t.after(() => reopened.close());
      assert.equal(repair, undefined, 'every record checks out');
      assert.deepEqual(ids(reopened), ['a-1']);
      assert.ok(reopened.holdsCopy('a-1', bytes));
    });

    it('writes the records of one turn together, and runs what waited for them after the write, in order', async (t) => {
      const dir = tempDir(t, 'store');
      const { store } = open(t, dir);
      const onDisk = (): number => recordStarts(readFileSync(join(dir, LOG))).starts.length;
      const before = onDisk(); // the meta record of the compaction at open
      const seen: string[] = [];
      add(store, chat('a', 1));
      store.afterWrite(() => seen.push(`after a-1: ${onDisk() - before} on disk`));
      add(store, chat('a', 2));
      store.afterWrite(() => seen.push(`after a-2: ${onDisk() - before} on disk`));
      assert.equal(onDisk(), before, 'nothing written yet within the turn');
      assert.equal(seen.length, 0);
      await Promise.resolve();
      // One record: the turn's batch, both messages under one checksum.
      assert.deepEqual(seen, ['after a-1: 1 on disk', 'after a-2: 1 on disk']);
      // Nothing pending: at once.
      store.afterWrite(() => seen.push('at once'));
      assert.equal(seen.at(-1), 'at once');
    });

    it('flush() writes at once; a callback that adds and flushes does not jump the queue', (t) => {
      const dir = tempDir(t, 'store');
      const { store } = open(t, dir);
      const order: string[] = [];
      add(store, chat('a', 1));
      store.afterWrite(() => {
        order.push('a-1');
        add(store, chat('b', 1)); // as a subscriber that sends from inside its callback
        store.afterWrite(() => order.push('b-1'));
        store.flush(); // writes b-1, runs nothing: the outer flush goes on, in order
        order.push('a-1 done');
      });
      add(store, chat('a', 2));
      store.afterWrite(() => order.push('a-2'));
      store.flush();
      assert.deepEqual(order, ['a-1', 'a-1 done', 'a-2', 'b-1']);
      const reopened = MessageStore.open(SELF, dir, {}, clock).store; // reads the log as a crash leaves it
      t.after(() => reopened.close());
      assert.deepEqual(ids(reopened).sort(), ['a-1', 'a-2', 'b-1']);
    });

    it('runs what waited at once without a directory (nothing to write)', (t) => {
      const { store } = open(t, undefined);
      let ran = false;
      add(store, chat('a', 1));
      store.afterWrite(() => (ran = true));
      assert.equal(ran, true);
    });

    it('keeps its own sequence counter across a reopen after compaction evicted all its messages', async (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 4 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      for (let i = 0; i < 3; i++) add(first, chat(SELF, first.nextSeq()));
      for (let seq = 1; seq <= 40; seq++) add(first, chat('a', seq)); // 10× the window: compacts
      await turnsUntil(() => !compacting(first), 'the compaction');
      assert.equal(
        ids(first).some((id) => id.startsWith(`${SELF}-`)),
        false,
      );
      first.close();
      const log = readFileSync(join(dir, LOG));
      assert.ok(!log.includes(`"from":"${SELF}"`), 'no own message is left in the log');

      const { store } = open(t, dir, window);
      assert.equal(store.nextSeq(), 4);
      assert.equal(store.knows(chat(SELF, 2)), true);
    });

    it('drops a torn last record, reports it, and keeps the rest', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      for (let seq = 1; seq <= 5; seq++) {
        add(first, chat('a', seq));
        first.flush(); // a turn each: a record each
      }
      first.close();
      const path = join(dir, LOG);
      const size = statSync(path).size;
      truncateSync(path, size - 3);

      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3', 'a-4']);
      assert.ok(repair !== undefined, 'the repair is reported');
      const lastRecord = 8 + 1 + serializeFrame(chat('a', 5)).length;
      assert.equal(repair.droppedBytes, lastRecord - 3);
      assert.match(repair.reason, /torn/);
      store.close();
      const again = open(t, dir);
      assert.equal(again.repair, undefined, 'the log was repaired: the next open finds nothing wrong');
      assert.deepEqual(ids(again.store), ['a-1', 'a-2', 'a-3', 'a-4']);
    });

    it('drops a torn record header at the end', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      add(first, chat('a', 1));
      first.close();
      const path = join(dir, LOG);
      writeFileSync(path, Buffer.concat([readFileSync(path), Buffer.from([0, 0, 1])]));
      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1']);
      assert.deepEqual(repair, { droppedBytes: 3, reason: 'a torn record header at the end' });
    });

    it('stops at a corrupted record in the middle, reports it, and truncates the log to the good part', (t) => {
      const dir = tempDir(t, 'store');
      writeLog(dir, 10);
      const path = join(dir, LOG);
      const log = readFileSync(path);
      const { starts } = recordStarts(log);
      const messageStarts = starts.filter((s) => kindAt(log, s) === 1);
      assert.equal(messageStarts.length, 10);
      const bad = messageStarts[4]!; // a-5
      log[bad + 20]! ^= 0x01; // one bit inside its body
      writeFileSync(path, log);

      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3', 'a-4']);
      assert.deepEqual(repair, { droppedBytes: log.length - bad, reason: `a damaged record at byte ${bad}` });
      store.close();
      const repaired = readFileSync(path);
      assert.ok(repaired.length <= bad, `the log shrank to the good part (${repaired.length} <= ${bad})`);
      assert.ok(!repaired.includes('"a-5"'), 'nothing from the damaged record on');
      const again = open(t, dir);
      assert.equal(again.repair, undefined);
      assert.deepEqual(ids(again.store), ['a-1', 'a-2', 'a-3', 'a-4']);
    });

    it('treats a record whose length was zeroed as the end of the good part', (t) => {
      const dir = tempDir(t, 'store');
      writeLog(dir, 3);
      const path = join(dir, LOG);
      const log = readFileSync(path);
      const bad = recordStarts(log).starts.at(-1)!;
      log.writeUInt32BE(0, bad);
      writeFileSync(path, log);
      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1', 'a-2']);
      assert.deepEqual(repair, { droppedBytes: log.length - bad, reason: 'an empty record' });
    });

    it('writes a turn of several messages as one batch record, a turn of one as a record of its own', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      const path = join(dir, LOG);
      const before = recordStarts(readFileSync(path)).starts.length;
      for (let seq = 1; seq <= 3; seq++) add(first, chat('a', seq));
      first.flush();
      add(first, chat('b', 1));
      first.flush();
      add(first, chat('a', 4));
      add(first, chat('b', 2));
      first.close();
      const log = readFileSync(path);
      const { starts, end } = recordStarts(log);
      assert.equal(end, log.length);
      assert.deepEqual(
        starts.slice(before).map((start) => kindAt(log, start)),
        [4, 1, 4],
        'batch, message, batch',
      );
      const { store, repair } = open(t, dir);
      assert.equal(repair, undefined);
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3', 'b-1', 'a-4', 'b-2']);
    });

    it('drops a torn batch whole, the turn it holds, and keeps the turns before it', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      add(first, chat('a', 1));
      add(first, chat('a', 2));
      first.flush();
      for (let seq = 3; seq <= 6; seq++) add(first, chat('a', seq));
      first.close();
      const path = join(dir, LOG);
      const log = readFileSync(path);
      const last = recordStarts(log).starts.at(-1)!;
      assert.equal(kindAt(log, last), 4);
      // Cut anywhere inside the last batch, even right after a whole entry of it: none of its messages.
      const cut = last + 8 + 1 + 4 + 1 + serializeFrame(chat('a', 3)).length;
      truncateSync(path, cut);
      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1', 'a-2']);
      assert.deepEqual(repair, { droppedBytes: cut - last, reason: 'a torn record at the end' });
    });

    it('keeps exactly the whole turns before any cut of a log of batches', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      const turns = [3, 1, 2, 4];
      const sent: string[] = [];
      let seq = 0;
      for (const size of turns) {
        for (let i = 0; i < size; i++) {
          add(first, chat('a', ++seq));
          sent.push(`a-${seq}`);
        }
        first.flush();
      }
      first.close();
      const original = readFileSync(join(dir, LOG));
      const { starts, end } = recordStarts(original);
      const turnStarts = starts.slice(-turns.length);
      assert.deepEqual(
        turnStarts.map((start) => kindAt(original, start)),
        [4, 1, 4, 4],
      );
      fc.assert(
        fc.property(fc.integer({ min: turnStarts[0]!, max: original.length }), (cut) => {
          const whole = [...turnStarts.slice(1), end].filter((e) => e <= cut).length;
          const sub = join(dir, `cut-${cut}`);
          mkdirSync(sub);
          try {
            writeFileSync(join(sub, LOG), original.subarray(0, cut));
            const { store } = MessageStore.open(SELF, sub, {}, clock);
            store.close();
            const n = turns.slice(0, whole).reduce((a, b) => a + b, 0);
            assert.deepEqual(ids(store), sent.slice(0, n));
          } finally {
            rmSync(sub, { recursive: true, force: true });
          }
        }),
        { numRuns: 60 },
      );
    });

    it('stops at a batch record whose entries do not add up, though its checksum holds', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      add(first, chat('a', 1));
      first.flush();
      add(first, chat('a', 2));
      add(first, chat('a', 3));
      first.close();
      const path = join(dir, LOG);
      const log = readFileSync(path);
      const last = recordStarts(log).starts.at(-1)!;
      const body = log.subarray(last + 8);
      body.writeUInt32BE(body.readUInt32BE(1) + 1, 1); // the first entry claims a byte of the second
      log.writeUInt32BE(crc32(body), last + 4);
      writeFileSync(path, log);
      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1']);
      assert.deepEqual(repair, {
        droppedBytes: log.length - last,
        reason: `an unreadable record at byte ${last}`,
      });
    });

    it('keeps the log within about twice the window while 10× the window is written', async (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 100 };
      const { store } = open(t, dir, window);
      const path = join(dir, LOG);
      let largest = 0;
      let compactions = 0;
      for (let seq = 1; seq <= 1_000; seq++) {
        add(store, chat('a', seq, 1_000, `message ${String(seq).padStart(6, '0')}`));
        if (seq % 10 === 0) {
          await Promise.resolve(); // let the append flush
          largest = Math.max(largest, statSync(path).size);
          // A chat slower than the disk: a compaction started is over before the next messages.
          if (compacting(store)) compactions++;
          await turnsUntil(() => !compacting(store), 'the compaction');
        }
      }
      store.close();
      assert.ok(compactions >= 5, `${compactions} compactions`);
      assert.equal(store.size, 100);
      // What one full window takes on disk: a fresh open compacts the log to exactly that.
      const reopened = open(t, dir, window);
      reopened.store.close();
      const windowBytes = statSync(path).size;
      t.diagnostic(`log: ${windowBytes} bytes for the window, at most ${largest} bytes while writing 10×`);
      // Twice the window, and what is written while a compaction runs: here the rest of a step of 10.
      assert.ok(largest <= 2.2 * windowBytes, `${largest} <= 2.2 × ${windowBytes}`);
      assert.deepEqual(ids(reopened.store).length, 100);
    });

    it('opens a log of more than 2 GiB (readFileSync refused one, so a node with a large --history could not start again)', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      for (let seq = 1; seq <= 3; seq++) add(first, chat('a', seq));
      first.close();
      // Zeros after the records, past 2 GiB (a sparse file: no blocks written), as a crash of the
      // machine can leave at the end of a log.
      const path = join(dir, LOG);
      const whole = statSync(path).size;
      truncateSync(path, 2 ** 31 + 4096);
      const { store, repair } = open(t, dir);
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3']);
      assert.deepEqual(repair, { droppedBytes: 2 ** 31 + 4096 - whole, reason: 'an empty record' });
      assert.ok(statSync(path).size < 2 * whole, 'compacted to the records');
    });

    it('takes a record length over the longest record as damage, before it allocates anything for it', (t) => {
      const dir = tempDir(t, 'store');
      writeLog(dir, 3);
      // A header whose length field says 0xFFFFFFF0, then zeros past 4 GiB (a sparse file), so the
      // length fits the file: read as it claims, the record asked for ~4 GiB of memory.
      const path = join(dir, LOG);
      const bad = statSync(path).size;
      const header = Buffer.alloc(8);
      header.writeUInt32BE(0xffff_fff0, 0);
      writeFileSync(path, header, { flag: 'a' });
      const size = 2 ** 32 + 4096;
      truncateSync(path, size);
      // A machine without that much memory to spare: a large allocation fails, as V8's does.
      let largest = 0;
      const alloc = Buffer.alloc.bind(Buffer);
      t.mock.method(Buffer, 'alloc', (length: number, ...rest: []): Buffer => {
        largest = Math.max(largest, length);
        if (length > MAX_RECORD_BYTES) throw new RangeError('Array buffer allocation failed');
        return alloc(length, ...rest);
      });
      const { store, repair } = open(t, dir);
      t.mock.restoreAll();
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3'], 'the records before it are kept');
      assert.deepEqual(repair, {
        droppedBytes: size - bad,
        reason: `a damaged record at byte ${bad} (its length field says ${0xffff_fff0} bytes, over the longest record, ${MAX_RECORD_BYTES}, and its kind byte is 0)`,
      });
      assert.ok(largest <= MAX_RECORD_BYTES, `no allocation over the longest record (${largest})`);
      assert.ok(statSync(path).size < bad + 4096, 'the log was rewritten without it');
    });

    it('reads a meta record over the longest record that an older build wrote, and every record after it', (t) => {
      const dir = tempDir(t, 'store');
      const { meta, senders } = legacyMeta();
      const messages = [
        chat('a', 1),
        chat('a', 2),
        { ...chat(senders[7]!, 8), id: 'after-floor', nick: 'n' },
      ];
      writeFileSync(
        join(dir, LOG),
        Buffer.concat([meta, ...messages.map((frame) => recordOf(1, serializeFrame(frame)))]),
      );
      const { store, repair } = open(t, dir);
      assert.equal(repair, undefined, 'no damage');
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'after-floor'], 'the messages after it are kept');
      assert.equal(store.ownSeq, 42, 'its own last number is kept');
      senders.forEach((from, i) =>
        assert.equal(store.knows({ from, seq: floorOf(i) }), true, 'every floor kept'),
      );
      assert.equal(store.knows({ from: senders[0]!, seq: floorOf(0) + 1 }), false);
      store.close();
      // The start's compaction wrote it again as meta records of this build (read back merged: see
      // the spec of many senders' floors below).
      const log = readFileSync(join(dir, LOG));
      const { starts, end } = recordStarts(log);
      assert.equal(end, log.length, 'whole records');
      const metas = starts.filter((start) => kindAt(log, start) === 2);
      assert.ok(metas.length > 1, `split into several meta records (${metas.length})`);
      for (const start of starts) assert.ok(log.readUInt32BE(start) <= MAX_RECORD_BYTES);
      assert.equal(starts.length, metas.length + 3, 'and the three messages');
    });

    it('takes a record over the longest record as damage, without holding it whole, when its checksum fails or it passes the end of the file', (t) => {
      const dir = tempDir(t, 'store');
      const { meta } = legacyMeta();
      const damaged = Buffer.from(meta);
      const flipped = damaged.length - 100; // one bit near its end, in the last senders' entries
      damaged.writeUInt8(damaged.readUInt8(flipped) ^ 1, flipped);
      const after = recordOf(1, payloadOf('a-1'));
      const path = join(dir, LOG);
      // A machine without that much memory to spare: a large allocation fails, as V8's does.
      let largest = 0;
      const alloc = Buffer.alloc.bind(Buffer);
      const opened = (log: Buffer): ReturnType<typeof open> => {
        writeFileSync(path, log);
        largest = 0;
        const mock = t.mock.method(Buffer, 'alloc', (length: number, ...rest: []): Buffer => {
          largest = Math.max(largest, length);
          if (length > MAX_RECORD_BYTES) throw new RangeError('Array buffer allocation failed');
          return alloc(length, ...rest);
        });
        try {
          return open(t, dir);
        } finally {
          mock.mock.restore();
        }
      };
      const length = damaged.readUInt32BE(0);
      const bad = opened(Buffer.concat([damaged, after]));
      assert.deepEqual(bad.repair, {
        droppedBytes: damaged.length + after.length,
        reason: `a damaged record at byte 0 (its length field says ${length} bytes, over the longest record, ${MAX_RECORD_BYTES}, and its checksum does not match)`,
      });
      assert.equal(bad.store.size, 0, 'nothing after it is read');
      assert.equal(bad.store.knows({ from: 'a', seq: 1 }), false, 'nor its floors');
      assert.ok(largest <= MAX_RECORD_BYTES, `no allocation over the longest record (${largest})`);
      bad.store.close();

      // Its first 64 KiB, then the file ends: past the end of the file, damage at once.
      const before = recordOf(1, payloadOf('a-1'));
      const torn = opened(Buffer.concat([before, meta.subarray(0, 64 * 1024)]));
      assert.deepEqual(torn.repair, {
        droppedBytes: 64 * 1024,
        reason: `a damaged record at byte ${before.length} (its length field says ${length} bytes, over the longest record, ${MAX_RECORD_BYTES}, and past the end of the file)`,
      });
      assert.deepEqual(ids(torn.store), ['a-1']);
      assert.ok(largest <= MAX_RECORD_BYTES, `no allocation over the longest record (${largest})`);
    });

    it("reads an older build's turn over the longest record, and passes over a message longer than this build takes (its floor guards it)", (t) => {
      const dir = tempDir(t, 'store');
      // ~48 KiB a message (16 Ki characters of 3 bytes each), all in one batch record: ~17 MiB.
      const long = '\u20ac'.repeat(16 * 1024);
      const count = Math.ceil((1.05 * MAX_RECORD_BYTES) / (3 * long.length));
      const entries = Array.from({ length: count }, (_, i) => {
        const body = recordOf(1, serializeFrame(chat('a', i + 1, T0, long))).subarray(4);
        body.writeUInt32BE(body.length - 4, 0); // [u32 length][kind + body]: no checksum of its own
        return body;
      });
      const turn = recordOf(4, Buffer.concat(entries));
      assert.ok(turn.readUInt32BE(0) > MAX_RECORD_BYTES, 'a record over the longest record');
      // A message an older build kept under a raised maxFrameBytes: a record over the longest too.
      const json = serializeFrame(chat('b', 1));
      const huge = Buffer.concat([json, Buffer.alloc(MAX_RECORD_BYTES - json.length, ' ')]);
      writeFileSync(join(dir, LOG), Buffer.concat([turn, recordOf(1, huge), recordOf(1, payloadOf('b-2'))]));
      const { store, repair } = open(t, dir);
      assert.equal(repair, undefined, 'no damage');
      assert.equal(store.size, count + 1);
      assert.equal(store.marks().get('a'), count, 'the whole turn');
      assert.deepEqual(ids(store, 1), ['b-2'], 'and what follows');
      assert.equal(store.knows(chat('b', 1)), true, 'not held, but known');
      assert.equal(store.marks().get('b'), 2);
    });

    it('writes a turn longer than the longest record as several records, and reads them all back', (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 2_000 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      // ~48 KiB a message (16 Ki characters of 3 bytes each), all in one turn: ~19 MiB.
      const long = '\u20ac'.repeat(16 * 1024);
      const count = Math.ceil((1.2 * MAX_RECORD_BYTES) / (3 * long.length));
      for (let seq = 1; seq <= count; seq++) add(first, chat('a', seq, T0, long));
      first.flush();
      const log = readFileSync(join(dir, LOG));
      first.close();
      const { starts, end } = recordStarts(log);
      assert.equal(end, log.length, 'whole records');
      assert.ok(
        starts.length > 2,
        `the meta record and more than one record for the turn (${starts.length})`,
      );
      for (const start of starts) assert.ok(log.readUInt32BE(start) <= MAX_RECORD_BYTES);
      const { store, repair } = open(t, dir, window);
      assert.equal(repair, undefined);
      assert.equal(store.size, count);
      assert.equal(store.marks().get('a'), count);
    });

    it('takes a payload up to the longest a record holds, alone in its turn or not, and refuses a longer one', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      /** The frame's JSON padded with spaces to `length` bytes (JSON.parse takes trailing spaces). */
      const padded = (frame: ChatFrame, length: number): Buffer => {
        const json = serializeFrame(frame);
        return Buffer.concat([json, Buffer.alloc(length - json.length, ' ')]);
      };
      assert.equal(first.add(chat('a', 1), padded(chat('a', 1), MAX_PAYLOAD_BYTES + 1)), false);
      assert.equal(first.add(chat('a', 1), padded(chat('a', 1), MAX_PAYLOAD_BYTES)), true);
      first.flush();
      add(first, chat('a', 2));
      assert.equal(first.add(chat('a', 3), padded(chat('a', 3), MAX_PAYLOAD_BYTES)), true);
      first.close();
      const { store, repair } = open(t, dir);
      assert.equal(repair, undefined);
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3']);
    });

    it('splits the meta record of many senders, each part under the longest record, and keeps every floor', async (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 30_000 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      // 130,000 senders with ids of 64 characters, each with its message evicted: ~18 MB of floors.
      const senders = Array.from({ length: 160_000 }, (_, i) => `${i}-`.padEnd(64, 'x'));
      senders.forEach((from, i) => add(first, { ...chat(from, 7), id: `m${i}`, nick: 'n' }));
      // The compaction started at twice the window writes the floors of then; the next, all of them.
      await turnsUntil(() => !compacting(first), 'the first compaction');
      first.marks(); // evicts: the log still holds more than twice the window
      assert.ok(compacting(first), 'the next compaction started');
      await turnsUntil(() => !compacting(first), 'the next compaction');
      first.close();
      const log = readFileSync(join(dir, LOG));
      const metas = recordStarts(log).starts.filter((start) => kindAt(log, start) === 2);
      assert.ok(metas.length > 1, `more than one meta record (${metas.length})`);
      for (const start of metas) assert.ok(log.readUInt32BE(start) <= MAX_RECORD_BYTES);
      const { store, repair } = open(t, dir, window);
      assert.equal(repair, undefined);
      for (const from of senders)
        assert.equal(store.knows({ from, seq: 7 }), true, 'held, or its floor kept');
      assert.equal(store.knows({ from: senders[0]!, seq: 8 }), false);
    });

    it('holds no more than the window while it reads a log of twice the window (the log holds up to that before a compaction)', (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 100 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      for (let seq = 1; seq <= 200; seq++) add(first, chat('a', seq));
      first.close();
      const proto = MessageStore.prototype as unknown as { hold: (...args: unknown[]) => unknown };
      const hold = proto.hold;
      let most = 0;
      proto.hold = function (this: MessageStore, ...args: unknown[]) {
        const kept = hold.apply(this, args);
        most = Math.max(most, this.size);
        return kept;
      };
      try {
        const { store } = open(t, dir, window);
        assert.deepEqual(ids(store), ids(first).slice(-100));
      } finally {
        proto.hold = hold;
      }
      assert.ok(most <= 101, `held ${most} at once`);
    });

    it('reads a log longer than what it reads at a time, records across the seams', (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 30_000 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      // ~9 MB: more than two chunks of 4 MiB, one record a message (compacted at the open below).
      for (let seq = 1; seq <= 25_000; seq++)
        add(first, chat('a', seq, T0, `message ${seq} ${'x'.repeat(100)}`));
      first.close();
      const compacted = MessageStore.open(SELF, dir, window, clock).store;
      const written = ids(compacted);
      compacted.close();
      const { store, repair } = open(t, dir, window);
      assert.equal(repair, undefined);
      assert.ok(statSync(join(dir, LOG)).size > 8 * 1024 * 1024);
      assert.equal(store.size, 25_000);
      assert.deepEqual(ids(store), written);
    });

    it('survives any truncation or single-byte corruption of a valid log, keeping a prefix', (t) => {
      const dir = tempDir(t, 'store');
      const window = { maxMessages: 8 };
      const first = MessageStore.open(SELF, dir, window, clock).store;
      // Own messages and two senders, with evictions, so the log holds a meta record with a sequence
      // number and floors, then messages.
      for (let i = 1; i <= 12; i++) {
        add(first, chat('a', i));
        if (i % 3 === 0) add(first, chat(SELF, first.nextSeq()));
        if (i % 4 === 0) add(first, chat('b', i / 4));
      }
      first.close();
      // Reopening compacts the log to the meta record plus the window, so every prefix of it fits
      // the window and nothing is evicted when a damaged copy is opened.
      const compacted = MessageStore.open(SELF, dir, window, clock).store;
      const all = ids(compacted);
      compacted.close();
      const original = readFileSync(join(dir, LOG));
      const { starts, end } = recordStarts(original);
      assert.equal(end, original.length, 'the log is well formed before the damage');
      assert.equal(kindAt(original, 0), 2, 'it starts with the meta record');
      assert.equal(all.length, 8);
      /** Messages of the whole records before `offset`, and where the last of them ends. */
      const kept = (offset: number): { n: number; boundary: number } => {
        const boundaries = [...starts, end].filter((s) => s <= offset);
        const boundary = boundaries.at(-1) ?? 0;
        return { n: Math.max(0, boundaries.length - 2), boundary }; // minus the meta record and `end`/itself
      };
      let run = 0;
      const check = (damaged: Buffer, expected: { n: number; boundary: number }): void => {
        const sub = join(dir, `run-${run++}`);
        mkdirSync(sub);
        try {
          writeFileSync(join(sub, LOG), damaged);
          const { store, repair } = MessageStore.open(SELF, sub, window, clock);
          store.close();
          assert.deepEqual(ids(store), all.slice(0, expected.n), 'a prefix of the messages');
          const dropped = damaged.length - expected.boundary;
          if (dropped > 0) assert.equal(repair?.droppedBytes, dropped, 'the repair names the bytes dropped');
          else assert.equal(repair, undefined, 'no repair when nothing was dropped');
          // The meta record carries the own counter (4 own messages were sent) whatever follows it.
          if (expected.boundary > 0) assert.equal(store.nextSeq(), 5, 'the own counter survives');
        } finally {
          rmSync(sub, { recursive: true, force: true });
        }
      };
      fc.assert(
        fc.property(fc.integer({ min: 0, max: original.length }), (cut) => {
          check(original.subarray(0, cut), kept(cut));
        }),
        { numRuns: 150 },
      );
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: original.length - 1 }),
          fc.integer({ min: 1, max: 255 }),
          (at, xor) => {
            const damaged = Buffer.from(original);
            damaged[at]! ^= xor;
            // The record holding the damaged byte is dropped, with everything after it.
            const { boundary } = kept(at);
            check(damaged, { n: kept(boundary).n, boundary });
          },
        ),
        { numRuns: 150 },
      );
    });
  });

  describe('compacting in the background (the log holds more than twice the window)', () => {
    /** The window of a {@link fullLog} once one more message started its compaction: 'a' `maxMessages` + 2 on. */
    const windowOfA = (maxMessages: number): string[] =>
      Array.from({ length: maxMessages }, (_, i) => `a-${maxMessages + 2 + i}`);

    it('does not hold up the event loop: it turns while the window is written, and the log is then the window', async (t) => {
      const maxMessages = 5_000; // some 5 MB to write: more than one chunk
      const { dir, store, ino } = fullLog(t, maxMessages);
      const before = statSync(join(dir, LOG)).size;
      add(store, chat('a', 2 * maxMessages + 1)); // starts it
      assert.equal(logInode(dir), ino, 'the log is not replaced within the call that started it');
      assert.equal(existsSync(join(dir, NEXT)), true, 'its file is being written');
      let timers = 0;
      const timer = setInterval(() => timers++, 0);
      let turns: number;
      try {
        turns = await turnsUntil(() => logInode(dir) !== ino, 'the log replaced');
      } finally {
        clearInterval(timer);
      }
      t.diagnostic(`${turns} turns of the event loop, ${timers} timer callbacks while it ran`);
      // A chunk's write, the next one's and the sync each return in a turn of their own.
      assert.ok(turns >= 3, `${turns} turns while it ran`);
      assert.equal(existsSync(join(dir, NEXT)), false, 'renamed over the log');
      assert.ok(statSync(join(dir, LOG)).size < before / 1.5, 'the log holds about one window');
      assert.equal(compacting(store), false, 'over');
      const copy = idsOfCopy(t, dir, { maxMessages });
      assert.equal(copy.repair, undefined);
      assert.deepEqual(copy.ids, windowOfA(maxMessages));
    });

    it('puts what was written to the log while it ran into the new log before that replaces the old', async (t) => {
      const maxMessages = 5_000;
      const window = { maxMessages };
      const { dir, store, ino } = fullLog(t, maxMessages);
      add(store, chat('a', 2 * maxMessages + 1));
      // A message a turn (each written to the log in its turn), until the log is replaced: every
      // message added before is in the new log, as a kill -9 right then would leave it.
      let seq = 0;
      const released: string[] = [];
      await turnsUntil(
        () => logInode(dir) !== ino,
        'the log replaced',
        () => {
          const id = `b-${++seq}`;
          add(store, chat('b', seq));
          store.afterWrite(() => released.push(id));
        },
      );
      t.diagnostic(`${seq} messages added while it ran`);
      assert.ok(seq >= 3, `${seq} messages added while it ran`);
      assert.equal(released.length, seq, 'each passed on once written to the old log');
      const held = ids(store);
      assert.deepEqual(held.slice(-seq), released);
      const copy = idsOfCopy(t, dir, window);
      assert.equal(copy.repair, undefined, 'every record whole');
      assert.deepEqual(copy.ids, held);
      // And appends go on to the new log.
      add(store, chat('b', ++seq));
      await Promise.resolve();
      assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store));
      store.close();
      reopensWhole(t, dir, window, ids(store));
    });

    it('is given up when more than the window came while its sync hangs: what it kept of that is let go, the log has all', async (t) => {
      const maxMessages = 1_000;
      const window = { maxMessages };
      const { dir, store, ino } = fullLog(t, maxMessages);
      // A disk whose syncs hang: the compaction's first sync (of the window) is held until released.
      const held: Array<() => void> = [];
      const realFsync = fs.fsync;
      t.after(() => {
        t.mock.restoreAll();
        syncBuiltinESMExports();
      });
      t.mock.method(fs, 'fsync', (fd: number, done: (err: NodeJS.ErrnoException | null) => void): void => {
        held.push(() => realFsync(fd, done));
      });
      syncBuiltinESMExports();
      let seq = 2 * maxMessages;
      add(store, chat('a', ++seq, T0, `message ${seq} `.padEnd(1_000, 'x'))); // starts it
      const next = join(dir, NEXT);
      await turnsUntil(() => held.length > 0, 'its sync of the window');
      assert.ok(existsSync(next));
      // A burst while the sync hangs: 5 MB, five windows, 100 messages a turn.
      for (let turn = 0; turn < 50; turn++) {
        for (let i = 0; i < 100; i++)
          add(store, chat('b', turn * 100 + i + 1, T0, `b ${turn} ${i} `.padEnd(1_000, 'y')));
        await nextTurn();
      }
      assert.ok(!existsSync(next), 'given up: its file removed');
      const kept = (store as unknown as { compacting: { tail: unknown[]; tailBytes: number } }).compacting;
      assert.equal(kept.tailBytes, 0, 'the copies of what came meanwhile let go');
      assert.equal(logInode(dir), ino, 'the log not replaced');
      assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store), 'the log holds what the store does');
      // The sync returns: the next write starts a compaction again, and it completes.
      t.mock.restoreAll();
      syncBuiltinESMExports();
      for (const release of held.splice(0)) release();
      await turnsUntil(() => !compacting(store), 'the given-up compaction to end');
      add(store, chat('c', 1));
      await turnsUntil(() => !compacting(store) && logInode(dir) !== ino, 'a compaction that completes');
      store.close();
      reopensWhole(t, dir, window, ids(store));
    });

    it('is given up at close: the log keeps every record, and neither its file nor its descriptor is left', async (t) => {
      const maxMessages = 5_000;
      const window = { maxMessages };
      const { dir, store, ino } = fullLog(t, maxMessages);
      const files = readdirSync(dir).sort();
      const descriptors = readdirSync('/proc/self/fd').length;
      add(store, chat('a', 2 * maxMessages + 1));
      add(store, chat('b', 1));
      await nextTurn();
      add(store, chat('b', 2)); // pending at the close: written by it
      assert.equal(logInode(dir), ino, 'still in flight');
      const held = ids(store);
      store.close();
      assert.deepEqual(
        readdirSync(dir).sort(),
        files,
        'its file is removed at once: the process may exit now',
      );
      // Its write in flight returns later: its descriptor is closed then, nothing renamed or left.
      await turnsUntil(() => !compacting(store), 'the write in flight to return');
      assert.deepEqual(readdirSync(dir).sort(), files);
      assert.equal(logInode(dir), ino, 'the log as it was, with what came meanwhile');
      assert.equal(
        readdirSync('/proc/self/fd').length,
        descriptors - 1,
        "the log's and its file's descriptors closed",
      );
      reopensWhole(t, dir, window, held);
    });

    it('syncs its file before the rename over the log, with what came meanwhile (the last of it on the event loop), and the directory after it', async (t) => {
      const dir = tempDir(t, 'store');
      const path = join(dir, LOG);
      const window = { maxMessages: 10 };
      const store = MessageStore.open(SELF, dir, window, clock).store;
      t.after(() => store.close());
      for (let seq = 1; seq <= 20; seq++) add(store, chat('a', seq));
      store.flush();
      // Each call on the log's files, in order: the store's named imports of node:fs follow the
      // module's properties once syncBuiltinESMExports runs.
      const calls: string[] = [];
      const real = {
        fsync: fs.fsync,
        fsyncSync: fs.fsyncSync,
        renameSync: fs.renameSync,
        writev: fs.writev,
        writevSync: fs.writevSync,
        writeSync: fs.writeSync,
      };
      const name = (file: string): string =>
        file === dir ? 'dir' : file === path ? 'log' : file === join(dir, NEXT) ? 'next' : 'other';
      const names = nameOpens(t, name, calls);
      const nameOf = (fd: number): string => names.get(fd) ?? 'other';
      let b = 0;
      t.mock.method(
        fs,
        'fsync',
        (fd: number, callback: (err: NodeJS.ErrnoException | null) => void): void => {
          calls.push(`fsync ${nameOf(fd)}`);
          // A message comes while each sync is on its way: the compaction has more to catch up with.
          add(store, chat('b', ++b));
          store.flush();
          real.fsync(fd, callback);
        },
      );
      t.mock.method(fs, 'fsyncSync', (fd: number): void => {
        real.fsyncSync(fd);
        calls.push(`fsyncSync ${nameOf(fd)}`);
      });
      t.mock.method(fs, 'renameSync', (from: string, to: string): void => {
        real.renameSync(from, to);
        calls.push(`rename ${name(from)} ${name(to)}`);
      });
      t.mock.method(fs, 'writev', (fd: number, parts: Uint8Array[], callback: never): void => {
        calls.push(`writev ${nameOf(fd)}`);
        real.writev(fd, parts, callback);
      });
      t.mock.method(fs, 'writevSync', (fd: number, parts: Uint8Array[]): number => {
        calls.push(`writevSync ${nameOf(fd)}`);
        return real.writevSync(fd, parts);
      });
      t.mock.method(fs, 'writeSync', (fd: number, buffer: Buffer, offset: number, length: number): number => {
        calls.push(`writeSync ${nameOf(fd)}`);
        return real.writeSync(fd, buffer, offset, length);
      });
      syncBuiltinESMExports();
      const ino = logInode(dir);
      add(store, chat('a', 21)); // the log holds more than twice the window
      await turnsUntil(() => logInode(dir) !== ino, 'the log replaced');
      t.diagnostic(calls.join(', '));
      // The turn's record is written first: the window is what the log holds up to there. Each
      // round writes (to its file) what was written to the log meanwhile, and syncs it; what came
      // during the last round is written and synced on the event loop, then the file is renamed.
      assert.match(
        calls.join(', '),
        /^writeSync other, open next, writev next, (?:fsync next, writeSync other, writev next, )+fsync next, writeSync other, writevSync next, fsyncSync next, rename next log, open log, open dir, fsyncSync dir$/,
      );
      assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store));
      assert.ok(ids(store).includes(`b-${b}`));
    });

    it('writes the log of the start on the event loop, synced before its rename, the directory after it', (t) => {
      const dir = tempDir(t, 'store');
      const path = join(dir, LOG);
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      add(first, chat('a', 1));
      first.close();
      const calls: string[] = [];
      const real = { fsyncSync: fs.fsyncSync, renameSync: fs.renameSync };
      const name = (file: string): string =>
        file === dir ? 'dir' : file === path ? 'log' : file === `${path}.tmp` ? 'tmp' : 'other';
      const names = nameOpens(t, name, calls);
      t.mock.method(fs, 'fsyncSync', (fd: number): void => {
        real.fsyncSync(fd);
        calls.push(`fsync ${names.get(fd) ?? 'other'}`);
      });
      t.mock.method(fs, 'renameSync', (from: string, to: string): void => {
        real.renameSync(from, to);
        calls.push(`rename ${name(from)} ${name(to)}`);
      });
      syncBuiltinESMExports();
      const { store } = open(t, dir);
      assert.deepEqual(calls, [
        'open log', // read
        'open tmp',
        'fsync tmp',
        'rename tmp log',
        'open log',
        'open dir',
        'fsync dir',
      ]);
      assert.deepEqual(ids(store), ['a-1']);
    });
  });

  describe('when the disk fails (full, I/O errors): reported, kept in memory, written again later', () => {
    /**
     * Points the store's open log at /dev/full, where every write fails with ENOSPC: the one way to
     * make the writes of an open file fail on demand (its descriptor is private).
     */
    function fillDisk(t: TestContext, store: MessageStore): void {
      const held = store as unknown as { fd: number };
      closeSync(held.fd);
      held.fd = openSync('/dev/full', 'w');
      t.after(() => store.close());
    }

    /** The `reserved-<upTo>` marks in `dir`. */
    const reservedMarks = (dir: string): string[] =>
      readdirSync(dir).filter((name) => name.startsWith('reserved-'));

    /** A clock the test moves, and the failures the store reported (undefined: writing again). */
    function watched(store: MessageStore): (string | undefined)[] {
      const seen: (string | undefined)[] = [];
      store.onWriteFailure = (err) => seen.push(err?.code);
      return seen;
    }

    /**
     * A store in a fresh directory holding a-1 on disk, whose log then fails every write; its clock
     * moves only with `later`.
     */
    function failingStore(t: TestContext): {
      dir: string;
      store: MessageStore;
      seen: (string | undefined)[];
      later: (ms: number) => void;
    } {
      const dir = tempDir(t, 'store');
      let now = T0;
      const { store } = MessageStore.open(SELF, dir, {}, () => now);
      const seen = watched(store);
      add(store, chat('a', 1));
      store.flush();
      fillDisk(t, store);
      return { dir, store, seen, later: (ms) => (now += ms) };
    }

    it('reports a failed write once, passes the messages on anyway, and writes them all once it can', (t) => {
      const { dir, store, seen, later } = failingStore(t);
      const released: string[] = [];
      for (let seq = 2; seq <= 4; seq++) {
        add(store, chat('a', seq));
        store.afterWrite(() => released.push(`a-${seq}`));
        assert.doesNotThrow(() => store.flush());
      }
      assert.deepEqual(seen, ['ENOSPC'], 'reported once, not once per write');
      assert.deepEqual(released, ['a-2', 'a-3', 'a-4'], 'shown and relayed from memory');
      assert.deepEqual(ids(store), ['a-1', 'a-2', 'a-3', 'a-4']);

      // Before WRITE_RETRY_MS nothing is tried; after it, a timer's retryWrite rewrites the window
      // (in the directory, which has room: the descriptor pointing at /dev/full is replaced).
      later(WRITE_RETRY_MS - 1);
      store.retryWrite();
      assert.deepEqual(seen, ['ENOSPC']);
      later(1);
      store.retryWrite();
      assert.deepEqual(seen, ['ENOSPC', undefined]);
      add(store, chat('a', 5));
      store.close();
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.equal(reopened.repair, undefined);
      assert.deepEqual(ids(reopened.store), ['a-1', 'a-2', 'a-3', 'a-4', 'a-5']);
    });

    it('tries again at a flush too, and a rewrite that fails as well leaves the log as it was', (t) => {
      const { dir, store, seen, later } = failingStore(t);
      const before = readFileSync(join(dir, LOG));
      add(store, chat('a', 2));
      store.flush();
      // The rewrite's temporary file is on the full disk too.
      symlinkSync('/dev/full', join(dir, `${LOG}.tmp`));
      later(WRITE_RETRY_MS);
      add(store, chat('a', 3));
      store.flush();
      assert.deepEqual(seen, ['ENOSPC'], 'a failed retry is no news');
      assert.deepEqual(
        readFileSync(join(dir, LOG)),
        before,
        'the log is not replaced by a part of the window',
      );
      assert.equal(existsSync(join(dir, `${LOG}.tmp`)), false, 'the temporary file is removed');
      later(WRITE_RETRY_MS);
      add(store, chat('a', 4));
      store.flush();
      assert.deepEqual(seen, ['ENOSPC', undefined]);
      store.close();
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.deepEqual(ids(reopened.store), ['a-1', 'a-2', 'a-3', 'a-4']);
    });

    it('goes on numbering its own messages when the seq file cannot be written, and writes it with the log later', (t) => {
      const dir = tempDir(t, 'store');
      let now = T0;
      const { store } = open(t, dir, {}, () => now);
      const seen = watched(store);
      symlinkSync('/dev/full', join(dir, 'seq.tmp'));
      assert.deepEqual([store.nextSeq(), store.nextSeq()], [1, 2]);
      assert.deepEqual(seen, ['ENOSPC']);
      assert.equal(existsSync(join(dir, 'seq')), false);
      now += WRITE_RETRY_MS;
      store.retryWrite();
      assert.deepEqual(seen, ['ENOSPC', undefined], 'writing again once both files are written');
      assert.equal(reservedIn(dir), 1_001);
      assert.equal(existsSync(join(dir, 'unsaved')), false);
      assert.deepEqual(reservedMarks(dir), [], 'the mark of the block goes with the seq file written');
    });

    it('numbers above every block reserved during an outage longer than one block, after a restart', (t) => {
      const { dir, store } = failingStore(t);
      // The disk stays full: each failed try removes its temporary file, and finds the full one again.
      const seqTmp = join(dir, 'seq.tmp');
      let last = 0;
      for (let i = 0; i < 2_500; i++) {
        if (!existsSync(seqTmp)) symlinkSync('/dev/full', seqTmp);
        last = store.nextSeq();
      }
      assert.equal(last, 2_500);
      assert.equal(existsSync(join(dir, 'seq')), false, 'the seq file was never written');
      assert.deepEqual(
        reservedMarks(dir),
        ['reserved-3003'],
        'the highest block is marked, the older marks removed',
      );
      // The last try, at close, fails too.
      symlinkSync('/dev/full', join(dir, `${LOG}.tmp`));
      store.close();
      rmSync(seqTmp, { force: true });
      assert.equal(existsSync(join(dir, 'unsaved')), true);
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.equal(reopened.store.nextSeq(), 3_004, 'above every number sent during the outage');
      assert.equal(reservedIn(dir), 4_004);
      assert.deepEqual(reservedMarks(dir), []);
      assert.equal(existsSync(join(dir, 'unsaved')), false);
    });

    /** Stops `store` as kill -9 would: its log's descriptor closed, nothing more written. */
    function kill(store: MessageStore): void {
      const held = store as unknown as { fd: number | undefined };
      if (held.fd !== undefined) closeSync(held.fd);
      held.fd = undefined;
    }

    it('makes a mark the disk refused at its next try, and numbers above it after a kill', (t) => {
      const dir = tempDir(t, 'store');
      let now = T0;
      const { store } = open(t, dir, {}, () => now);
      for (let i = 0; i < 1_001; i++) store.nextSeq();
      assert.equal(reservedIn(dir), 1_001);
      const seqTmp = join(dir, 'seq.tmp');
      symlinkSync('/dev/full', seqTmp);
      // The mark of the next block cannot be made either, this once: a directory holds its name.
      mkdirSync(join(dir, 'reserved-2002'));
      assert.equal(store.nextSeq(), 1_002);
      rmdirSync(join(dir, 'reserved-2002'));
      assert.deepEqual(reservedMarks(dir), []);
      // The retry rewrites the log but not the seq file: it makes the mark.
      symlinkSync('/dev/full', seqTmp);
      now += WRITE_RETRY_MS;
      store.retryWrite();
      assert.deepEqual(reservedMarks(dir), ['reserved-2002']);
      for (let i = 0; i < 500; i++) store.nextSeq();
      kill(store);
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.equal(reopened.store.nextSeq(), 2_003, 'not 1,003: 1,003-1,502 were sent');
    });

    it('keeps the older mark when the disk refuses the newer one', (t) => {
      const { dir, store } = failingStore(t);
      const seqTmp = join(dir, 'seq.tmp');
      symlinkSync('/dev/full', seqTmp);
      store.nextSeq();
      assert.deepEqual(reservedMarks(dir), ['reserved-1001']);
      mkdirSync(join(dir, 'reserved-2002'));
      for (let i = 1; i < 1_002; i++) {
        if (!existsSync(seqTmp)) symlinkSync('/dev/full', seqTmp);
        store.nextSeq();
      }
      rmdirSync(join(dir, 'reserved-2002'));
      assert.deepEqual(reservedMarks(dir), ['reserved-1001'], 'the only mark there is');
      kill(store);
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.equal(reopened.store.nextSeq(), 1_002);
    });

    it('counts the highest mark, removes its own marks at the start and leaves other files', (t) => {
      const dir = tempDir(t, 'store');
      MessageStore.open(SELF, dir, {}, clock).store.close();
      // A kill between making a mark and removing the one before it leaves two.
      for (const name of ['reserved-2002', 'reserved-3003', 'reserved-01', 'reserved-abc', 'reserved-1e9']) {
        writeFileSync(join(dir, name), '');
      }
      writeFileSync(join(dir, 'reserved-99999999999999999'), ''); // not a safe integer: not a mark
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.deepEqual(reservedMarks(dir).sort(), [
        'reserved-1e9',
        'reserved-99999999999999999',
        'reserved-abc',
      ]);
      assert.equal(reservedIn(dir), 3_003);
      assert.equal(reopened.store.nextSeq(), 3_004);
    });

    it('does not start when it cannot write the seq file at the start, and keeps the marks for the next one', (t) => {
      const dir = tempDir(t, 'store');
      MessageStore.open(SELF, dir, {}, clock).store.close();
      writeFileSync(join(dir, 'unsaved'), '');
      writeFileSync(join(dir, 'reserved-2002'), '');
      symlinkSync('/dev/full', join(dir, 'seq.tmp'));
      const descriptors = readdirSync('/proc/self/fd').length;
      assert.throws(() => MessageStore.open(SELF, dir, {}, clock), { code: 'ENOSPC' });
      assert.equal(readdirSync('/proc/self/fd').length, descriptors, 'no descriptor left open');
      assert.equal(existsSync(join(dir, 'unsaved')), true);
      assert.deepEqual(reservedMarks(dir), ['reserved-2002']);
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.equal(reopened.store.nextSeq(), 2_003);
    });

    it('counts a reservation mark left without the unsaved mark as an outage', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      add(first, chat(SELF, first.nextSeq()));
      first.close();
      writeFileSync(join(dir, 'reserved-5000'), '');
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.deepEqual(reservedMarks(dir), [], 'written into the seq file at the start');
      assert.equal(reservedIn(dir), 5_000);
      assert.equal(reopened.store.nextSeq(), 5_001);
    });

    it('numbers its own messages above the reserved block after a restart that writes never caught up with', (t) => {
      const { dir, store } = failingStore(t);
      const seq = store.nextSeq(); // reserves 1..1000 in the seq file, which is still written
      add(store, chat(SELF, seq));
      store.flush();
      assert.equal(existsSync(join(dir, 'unsaved')), true, 'marked while writes fail');
      // The last try, at close, fails too.
      symlinkSync('/dev/full', join(dir, `${LOG}.tmp`));
      store.close();
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.deepEqual(ids(reopened.store), ['a-1'], 'its own message 1 never reached the disk');
      assert.equal(reopened.store.nextSeq(), 1002, 'not 1 again: peers hold that one');
      assert.equal(existsSync(join(dir, 'unsaved')), false);
    });

    /** A system error as a file system call reports one (`errno` negative, as libuv's). */
    const systemError = (code: string, errno: number, what: string, syscall: string): NodeJS.ErrnoException =>
      Object.assign(new Error(`${code}: ${what}, ${syscall}`), { errno, code, syscall });

    /** An I/O error of `syscall`. */
    const ioError = (syscall: string): NodeJS.ErrnoException => systemError('EIO', -5, 'i/o error', syscall);

    /** Makes opening the compaction file of the store in `dir` fail with EMFILE, until the mocks are restored (after the test at the latest). */
    function failOpenOfNext(t: TestContext, dir: string): void {
      t.after(() => {
        t.mock.restoreAll();
        syncBuiltinESMExports();
      });
      const real = fs.openSync;
      t.mock.method(fs, 'openSync', (file: string, flags: string, mode?: number): number => {
        if (file === join(dir, NEXT)) throw systemError('EMFILE', -24, 'too many open files', 'open');
        return real(file, flags, mode);
      });
      syncBuiltinESMExports();
    }

    /** The failures of compactions `store` reported (undefined: one compacted again). */
    function watchedCompactions(store: MessageStore): (string | undefined)[] {
      const seen: (string | undefined)[] = [];
      store.onCompactionFailure = (err) => seen.push(err?.code);
      return seen;
    }

    describe('a compaction at the start whose own file fails: the store starts on the log as it is, tried again later', () => {
      /** A log in a fresh directory of 150 messages, 'a' 1 to 150, for a window of 100; its bytes. */
      function logOf150(t: TestContext): { dir: string; window: HistoryWindow; bytes: Buffer } {
        const dir = tempDir(t, 'store');
        const window = { maxMessages: 100 };
        const first = MessageStore.open(SELF, dir, window, clock).store;
        for (let seq = 1; seq <= 150; seq++) add(first, chat('a', seq));
        first.close();
        return { dir, window, bytes: readFileSync(join(dir, LOG)) };
      }

      const range = (from: string, first: number, last: number): string[] =>
        Array.from({ length: last - first + 1 }, (_, i) => `${from}-${first + i}`);

      it('starts when its file has no room (ENOSPC): every message read, the failure reported once, new records appended, compacted after COMPACT_RETRY_MS', async (t) => {
        const { dir, window, bytes } = logOf150(t);
        symlinkSync('/dev/full', join(dir, `${LOG}.tmp`));
        let now = T0;
        const opened = open(t, dir, window, () => now);
        const { store } = opened;
        const seen = watched(store);
        const compactions = watchedCompactions(store);
        assert.equal(opened.repair, undefined);
        assert.deepEqual(compactions, ['ENOSPC'], 'told when its handler is set: the start comes first');
        assert.equal(existsSync(join(dir, `${LOG}.tmp`)), false, 'its file is removed');
        assert.deepEqual(readFileSync(join(dir, LOG)), bytes, 'the log as it was');
        assert.deepEqual(ids(store), range('a', 51, 150));
        const ino = logInode(dir);
        add(store, chat('b', 1));
        store.flush();
        assert.equal(logInode(dir), ino, 'not tried again before COMPACT_RETRY_MS');
        assert.equal(compacting(store), false);
        assert.ok(readFileSync(join(dir, LOG)).length > bytes.length, 'appended to');
        const copy = idsOfCopy(t, dir, window);
        assert.equal(copy.repair, undefined);
        assert.deepEqual(copy.ids, ids(store));
        // After the backoff, the next record starts a routine compaction (its file has room).
        now += COMPACT_RETRY_MS;
        add(store, chat('b', 2));
        assert.equal(compacting(store), true, 'tried COMPACT_RETRY_MS later');
        await turnsUntil(() => !compacting(store), 'the compaction');
        assert.notEqual(logInode(dir), ino, 'compacted');
        assert.deepEqual(compactions, ['ENOSPC', undefined]);
        assert.deepEqual(seen, [], 'no write failed');
        add(store, chat('b', 3));
        store.close();
        reopensWhole(t, dir, window, [...range('a', 54, 150), 'b-1', 'b-2', 'b-3']);
      });

      it('cuts a damaged tail it dropped from the log before appending, so the next start reads the log whole', (t) => {
        const { dir, window, bytes } = logOf150(t);
        writeFileSync(join(dir, LOG), Buffer.concat([bytes, Buffer.from([0, 0, 0, 50, 1, 2, 3])])); // a torn record
        symlinkSync('/dev/full', join(dir, `${LOG}.tmp`));
        const opened = open(t, dir, window);
        const compactions = watchedCompactions(opened.store);
        assert.equal(opened.repair?.droppedBytes, 7);
        assert.deepEqual(compactions, ['ENOSPC']);
        assert.deepEqual(readFileSync(join(dir, LOG)), bytes, 'cut back to its last whole record');
        add(opened.store, chat('b', 1));
        opened.store.close();
        reopensWhole(
          t,
          dir,
          window,
          [...range('a', 52, 150), 'b-1'],
          'the record appended follows a whole one',
        );
      });

      it('keeps its own numbering above the reserved block it started from for the next start, which the log does not hold', (t) => {
        const dir = tempDir(t, 'store');
        const first = MessageStore.open(SELF, dir, {}, clock).store;
        for (let i = 0; i < 3; i++) add(first, chat(SELF, first.nextSeq())); // reserves 1..1001
        first.flush();
        // What a kill now leaves (no close to write the last number used as the block), with a torn
        // tail: the start numbers above the block, which its compaction would have written.
        const killed = tempDir(t, 'store');
        for (const name of [LOG, 'seq']) writeFileSync(join(killed, name), readFileSync(join(dir, name)));
        first.close();
        writeFileSync(
          join(killed, LOG),
          Buffer.concat([readFileSync(join(killed, LOG)), Buffer.from([0, 0])]),
        );
        symlinkSync('/dev/full', join(killed, `${LOG}.tmp`));
        const opened = open(t, killed);
        assert.ok(opened.repair !== undefined);
        assert.equal(opened.store.ownSeq, 1_001);
        opened.store.close();
        const reopened = open(t, killed);
        assert.equal(reopened.repair, undefined);
        assert.equal(reopened.store.nextSeq(), 1_002, 'not 4: its messages 4 and on may have been sent');
      });

      it('throws a bug in writing its file rather than start on the log as it is', (t) => {
        const { dir, window } = logOf150(t);
        t.after(() => {
          t.mock.restoreAll();
          syncBuiltinESMExports();
        });
        t.mock.method(fs, 'writevSync', (): number => {
          throw new TypeError('a bug');
        });
        syncBuiltinESMExports();
        const descriptors = readdirSync('/proc/self/fd').length;
        assert.throws(() => MessageStore.open(SELF, dir, window, clock), TypeError);
        assert.equal(readdirSync('/proc/self/fd').length, descriptors, 'no descriptor left open');
      });
    });

    describe('a compaction in the background whose own file fails: no failed write, the log appended to as ever, tried again later', () => {
      /** Ways to make the next routine compaction of the store in `dir` fail (mocks restored by the test). */
      const compactionFailures: readonly [string, string, (t: TestContext, dir: string) => void][] = [
        ['its file not opened, no descriptor left', 'EMFILE', failOpenOfNext],
        [
          'its file on a full disk',
          'ENOSPC',
          (_t, dir) => symlinkSync('/dev/full', join(dir, NEXT)), // its open follows the link
        ],
        [
          'its write cut short',
          'ERR_SHORT_WRITE',
          (t) => {
            const real = fs.writev;
            t.mock.method(fs, 'writev', (fd: number, parts: Uint8Array[], callback: never) =>
              real(fd, parts.slice(0, 1), callback),
            );
          },
        ],
        [
          'its sync failing',
          'EIO',
          (t) => {
            t.mock.method(fs, 'fsync', (_fd: number, callback: (err: Error) => void) =>
              setImmediate(() => callback(ioError('fsync'))),
            );
          },
        ],
        [
          'its rename failing',
          'EIO',
          (t, dir) => {
            const real = fs.renameSync;
            t.mock.method(fs, 'renameSync', (from: string, to: string) => {
              if (from === join(dir, NEXT)) throw ioError('rename');
              real(from, to);
            });
          },
        ],
      ];

      for (const [failure, code, inject] of compactionFailures) {
        it(`leaves the log whole when a compaction in the background fails (${failure}): its file removed, the log appended to as ever, the failure reported once`, async (t) => {
          const maxMessages = 100;
          const window = { maxMessages };
          const { dir, store, ino } = fullLog(t, maxMessages);
          const seen = watched(store);
          const compactions = watchedCompactions(store);
          t.after(() => {
            t.mock.restoreAll();
            syncBuiltinESMExports();
          });
          inject(t, dir);
          syncBuiltinESMExports();
          add(store, chat('a', 2 * maxMessages + 1)); // starts it (an open that fails: at once)
          let seq = 0;
          add(store, chat('b', ++seq));
          await turnsUntil(
            () => compactions.length > 0 || seen.length > 0,
            'the failure',
            () => add(store, chat('b', ++seq)),
          );
          t.mock.restoreAll();
          syncBuiltinESMExports();
          assert.deepEqual(seen, [], 'not a failed write: the log itself takes records');
          assert.deepEqual(compactions, [code], 'reported once, as a failed compaction');
          assert.equal(compacting(store), false, 'over');
          assert.equal(existsSync(join(dir, NEXT)), false, 'its file is removed');
          assert.equal(logInode(dir), ino, 'the log is not replaced');
          assert.equal(existsSync(join(dir, 'unsaved')), false, 'nothing is kept in memory only');
          const held = ids(store);
          assert.ok(held.includes(`b-${seq}`));
          const copy = idsOfCopy(t, dir, window);
          assert.equal(copy.repair, undefined);
          assert.deepEqual(copy.ids, held, 'every message written to the log while it ran is there');
          // Appended to the log as ever: on disk once flushed, with no retry of a failed write.
          add(store, chat('c', 1));
          store.flush();
          assert.ok(ids(store).includes('c-1'));
          assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store));
          assert.deepEqual(seen, []);
          store.close();
          reopensWhole(t, dir, window, ids(store));
        });
      }

      it('tries a compaction whose file failed again after COMPACT_RETRY_MS, then twice as long each time up to COMPACT_RETRY_MAX_MS, reporting the streak once and its end', async (t) => {
        let now = T0;
        const maxMessages = 100;
        const window = { maxMessages };
        const { dir, store, ino } = fullLog(t, maxMessages, () => now);
        const seen = watched(store);
        const compactions = watchedCompactions(store);
        t.after(() => {
          t.mock.restoreAll();
          syncBuiltinESMExports();
        });
        // Every sync of its file fails: the background compaction's are the only asynchronous syncs.
        let tries = 0;
        const failSyncs = (): void => {
          t.mock.method(fs, 'fsync', (_fd: number, callback: (err: Error) => void) => {
            tries++;
            setImmediate(() => callback(ioError('fsync')));
          });
          syncBuiltinESMExports();
        };
        failSyncs();
        let seq = 0;
        const addOne = (): void => {
          add(store, chat('b', ++seq));
          store.flush();
        };
        add(store, chat('a', 2 * maxMessages + 1)); // starts the first
        await turnsUntil(() => compactions.length > 0 || seen.length > 0, 'the first failure');
        assert.equal(tries, 1);
        // The waits double from COMPACT_RETRY_MS and stay at COMPACT_RETRY_MAX_MS.
        const waits: number[] = [];
        for (let wait = COMPACT_RETRY_MS; waits.length < 9; wait = Math.min(2 * wait, COMPACT_RETRY_MAX_MS))
          waits.push(wait);
        assert.equal(waits.at(-2), COMPACT_RETRY_MAX_MS);
        for (const wait of waits) {
          // A try starts at the first record written once its time has come, not before.
          now += wait - 1;
          addOne();
          assert.equal(compacting(store), false, `not tried ${wait - 1} ms after the last failure`);
          now += 1;
          addOne();
          assert.equal(compacting(store), true, `tried ${wait} ms after the last failure`);
          await turnsUntil(() => !compacting(store), 'the try to fail');
        }
        assert.equal(tries, 1 + waits.length);
        assert.deepEqual(compactions, ['EIO'], 'one report for the streak, not one per try');
        assert.deepEqual(seen, [], 'no write failed');
        assert.equal(logInode(dir), ino, 'the log is not replaced');
        assert.equal(existsSync(join(dir, NEXT)), false);
        assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store), 'every record on the log');

        // The disk works again: the next try compacts the log to about the window, and says so.
        t.mock.restoreAll();
        syncBuiltinESMExports();
        const before = statSync(join(dir, LOG)).size;
        now += COMPACT_RETRY_MAX_MS;
        addOne();
        await turnsUntil(() => !compacting(store), 'the compaction');
        assert.notEqual(logInode(dir), ino, 'compacted');
        assert.ok(statSync(join(dir, LOG)).size < before / 2, 'the log holds about the window');
        assert.deepEqual(compactions, ['EIO', undefined]);
        assert.deepEqual(idsOfCopy(t, dir, window).ids, ids(store));

        // A failure after that is a new streak: reported again, and tried again after COMPACT_RETRY_MS.
        failSyncs();
        const triesBefore = tries;
        await turnsUntil(() => compacting(store), 'the next compaction', addOne);
        await turnsUntil(() => !compacting(store), 'its failure');
        assert.deepEqual(compactions, ['EIO', undefined, 'EIO']);
        now += COMPACT_RETRY_MS;
        addOne();
        assert.equal(compacting(store), true, 'tried after COMPACT_RETRY_MS again');
        await turnsUntil(() => !compacting(store), 'its failure');
        assert.equal(tries, triesBefore + 2);
        assert.deepEqual(compactions, ['EIO', undefined, 'EIO']);
        assert.deepEqual(seen, []);
        store.close();
        reopensWhole(t, dir, window, ids(store));
      });

      it('tries a compaction whose file failed again at once when the clock went back since, rather than after the step and the backoff', async (t) => {
        let now = T0;
        const maxMessages = 100;
        const { store, ino, dir } = fullLog(t, maxMessages, () => now);
        const compactions = watchedCompactions(store);
        failOpenOfNext(t, dir);
        add(store, chat('a', 2 * maxMessages + 1)); // starts one, whose open fails at once
        assert.deepEqual(compactions, ['EMFILE']);
        t.mock.restoreAll();
        syncBuiltinESMExports();
        now += COMPACT_RETRY_MS - 1;
        add(store, chat('b', 1));
        assert.equal(compacting(store), false, 'within the backoff: not tried');
        // The clock steps back an hour: before the failure, so the wait is over.
        now = T0 - 3_600_000;
        add(store, chat('b', 2));
        assert.equal(compacting(store), true, 'tried at once');
        await turnsUntil(() => !compacting(store), 'the compaction');
        assert.notEqual(logInode(dir), ino, 'compacted');
        assert.deepEqual(compactions, ['EMFILE', undefined]);
      });

      it('reports a streak again when its error changes (EMFILE, then ENOSPC), not at each failure, and keeps doubling its wait', async (t) => {
        let now = T0;
        const maxMessages = 100;
        const { store, dir } = fullLog(t, maxMessages, () => now);
        const seen = watched(store);
        const compactions = watchedCompactions(store);
        failOpenOfNext(t, dir);
        let seq = 0;
        /** Waits `wait` ms less one (not tried), then one more, and adds a record, which tries it. */
        const tryAfter = async (wait: number): Promise<void> => {
          now += wait - 1;
          add(store, chat('b', ++seq));
          assert.equal(compacting(store), false, `not tried ${wait - 1} ms after the last failure`);
          now += 1;
          add(store, chat('b', ++seq));
          await turnsUntil(() => !compacting(store), 'the try');
        };
        add(store, chat('a', 2 * maxMessages + 1)); // starts the first, whose open fails at once
        await tryAfter(COMPACT_RETRY_MS);
        assert.deepEqual(compactions, ['EMFILE'], 'the same error again: not reported');
        t.mock.restoreAll();
        syncBuiltinESMExports();
        // Its file on a full disk now (the link is removed with the file after each failure).
        symlinkSync('/dev/full', join(dir, NEXT));
        await tryAfter(2 * COMPACT_RETRY_MS);
        assert.deepEqual(compactions, ['EMFILE', 'ENOSPC'], 'another error: reported');
        symlinkSync('/dev/full', join(dir, NEXT));
        await tryAfter(4 * COMPACT_RETRY_MS);
        assert.deepEqual(compactions, ['EMFILE', 'ENOSPC']);
        await tryAfter(8 * COMPACT_RETRY_MS); // room again
        assert.deepEqual(compactions, ['EMFILE', 'ENOSPC', undefined]);
        assert.deepEqual(seen, [], 'no write failed');
        assert.deepEqual(idsOfCopy(t, dir, { maxMessages }).ids, ids(store));
      });

      it('throws a bug in opening the file of a compaction in the background rather than report it as a failed compaction', (t) => {
        const maxMessages = 100;
        const { dir, store } = fullLog(t, maxMessages);
        const seen = watched(store);
        const compactions = watchedCompactions(store);
        t.after(() => {
          t.mock.restoreAll();
          syncBuiltinESMExports();
        });
        const real = fs.openSync;
        t.mock.method(fs, 'openSync', (file: string, flags: string, mode?: number): number => {
          if (file === join(dir, NEXT)) throw new TypeError('a bug');
          return real(file, flags, mode);
        });
        syncBuiltinESMExports();
        assert.throws(() => add(store, chat('a', 2 * maxMessages + 1)), TypeError);
        assert.deepEqual(seen, []);
        assert.deepEqual(compactions, []);
      });
    });

    it('gives up a compaction in the background when a write to the log fails meanwhile, and the retry writes the window', async (t) => {
      let now = T0;
      const maxMessages = 1_000;
      const { dir, store, ino } = fullLog(t, maxMessages, () => now);
      const seen = watched(store);
      add(store, chat('a', 2 * maxMessages + 1)); // starts it
      assert.equal(compacting(store), true);
      fillDisk(t, store);
      add(store, chat('b', 1));
      store.flush();
      assert.deepEqual(seen, ['ENOSPC']);
      assert.equal(existsSync(join(dir, NEXT)), false, 'its file is removed at once');
      await turnsUntil(() => !compacting(store), 'the write in flight to return');
      assert.equal(logInode(dir), ino, 'not renamed over the log: the log lacks b-1');
      assert.deepEqual(seen, ['ENOSPC'], 'nothing more reported');
      now += WRITE_RETRY_MS;
      store.retryWrite();
      assert.deepEqual(seen, ['ENOSPC', undefined]);
      assert.deepEqual(idsOfCopy(t, dir, { maxMessages }).ids, ids(store));
      assert.ok(ids(store).includes('b-1'));
    });

    it('writes what it kept at close when it can', (t) => {
      const { dir, store } = failingStore(t);
      add(store, chat('a', 2));
      store.flush();
      store.close(); // before WRITE_RETRY_MS: the last try does not wait for it
      const reopened = MessageStore.open(SELF, dir, {}, clock);
      t.after(() => reopened.store.close());
      assert.deepEqual(ids(reopened.store), ['a-1', 'a-2']);
    });

    it('never renames a part of the window over the log (a write cut short by the file size limit)', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      for (let seq = 1; seq <= 60; seq++) add(first, chat('a', seq, T0, `line ${seq} `.padEnd(100, 'x')));
      first.close();
      const before = readFileSync(join(dir, LOG));
      assert.ok(before.length > 16 * 1024);
      // A child under `ulimit -f 8` (8 KiB): its start rewrites the log, and writev stops at the
      // limit with a count, not an error (Node ignores SIGXFSZ). It starts on the log as it was.
      const storeModule = fileURLToPath(new URL('../../lib/store/message-store.ts', import.meta.url));
      const script = join(dir, 'open.mts');
      writeFileSync(
        script,
        `import { MessageStore } from ${JSON.stringify(storeModule)};
const { store } = MessageStore.open('me', ${JSON.stringify(dir)}, {}, () => ${T0});
store.onCompactionFailure = (err) => console.log(err?.code);
store.close();`,
      );
      const child = spawnSync(
        'bash',
        ['-c', 'ulimit -f 8 && exec "$0" "$@"', process.execPath, '--import', 'tsx', script],
        { encoding: 'utf8', timeout: 20_000 },
      );
      assert.equal(child.stdout.trim(), 'ERR_SHORT_WRITE', child.stderr);
      assert.deepEqual(readFileSync(join(dir, LOG)), before);
      assert.equal(existsSync(join(dir, `${LOG}.tmp`)), false);
    });

    it('throws a bug rather than report it as a failed write', (t) => {
      const { store } = open(t, tempDir(t, 'store'));
      watched(store);
      const held = store as unknown as { fd: unknown };
      held.fd = 'not a descriptor';
      add(store, chat('a', 1));
      assert.throws(() => store.flush(), TypeError);
      held.fd = undefined;
    });
  });

  describe('own sequence numbers across a crash of the machine (writes not yet on disk are lost)', () => {
    /** Stops `store` as kill -9 would: its log's descriptor closed, nothing more written. */
    function kill(store: MessageStore): void {
      const held = store as unknown as { fd: number | undefined };
      if (held.fd !== undefined) closeSync(held.fd);
      held.fd = undefined;
    }

    /** A store in a fresh directory that sent own messages 1-5, one record each, and was killed. */
    function sentFive(t: TestContext): string {
      const dir = tempDir(t, 'store');
      const store = MessageStore.open(SELF, dir, {}, clock).store;
      for (let i = 0; i < 5; i++) {
        add(store, chat(SELF, store.nextSeq()));
        store.flush();
      }
      kill(store);
      return dir;
    }

    /** Cuts the log right after its `keep`th record: what a power loss leaves of unsynced appends. */
    function cutAtRecord(dir: string, keep: number): void {
      const path = join(dir, LOG);
      const log = readFileSync(path);
      const { starts, end } = recordStarts(log);
      writeFileSync(path, log.subarray(0, starts[keep] ?? end));
    }

    /** The seq file's first line (the block reserved) with `rest` after it. */
    function rewriteSeq(dir: string, rest: string): void {
      const path = join(dir, 'seq');
      writeFileSync(path, `${readFileSync(path, 'utf8').split('\n')[0]}\n${rest}`);
    }

    for (const [name, rest] of [
      ['a seq file written in another boot', 'another-boot\n'],
      ['a seq file that does not say its boot (an older build)', ''],
    ] as const) {
      it(`numbers above the reserved block when the log lost its last own records at a record boundary (nothing to see), with ${name}`, (t) => {
        const dir = sentFive(t);
        cutAtRecord(dir, 4); // the meta record and own messages 1-3
        rewriteSeq(dir, rest);
        const { store, repair } = open(t, dir);
        assert.equal(repair, undefined, 'a log cut between two records looks whole');
        assert.deepEqual(ids(store), [`${SELF}-1`, `${SELF}-2`, `${SELF}-3`]);
        assert.equal(store.nextSeq(), 1_002, 'not 4: peers hold 4 and 5, and would drop a new 4 as known');
      });
    }

    it('numbers above the reserved block when the log is gone, in the same boot too', (t) => {
      const dir = sentFive(t);
      rmSync(join(dir, LOG));
      const { store } = open(t, dir);
      assert.equal(store.nextSeq(), 1_002, 'not 1');
    });

    it('goes on from the log after a kill in the same boot: every record written is in the page cache', (t) => {
      const dir = sentFive(t);
      const { store } = open(t, dir);
      const next = store.nextSeq();
      if (HAS_BOOT_ID) assert.equal(next, 6);
      // No boot id (/proc/sys/kernel/random/boot_id): every start may follow a restart of the machine,
      // so numbering resumes above the reserved block, never at a number that may have been sent.
      else assert.ok(next > 6, `${next}: above the reserved block`);
    });

    it('goes on from its last number after a close, even when the machine restarted and the log lost records', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      for (let i = 0; i < 5; i++) {
        add(first, chat(SELF, first.nextSeq()));
        first.flush();
      }
      first.close();
      cutAtRecord(dir, 4);
      rewriteSeq(dir, 'another-boot\n');
      const { store } = open(t, dir);
      assert.equal(store.nextSeq(), 6, 'the close wrote the last number used: nothing above it was sent');
    });
  });

  describe('anti-entropy: what a peer asks for beyond its marks', () => {
    it('lists the ranges held above a mark, lowest first, at most as many as asked', (t) => {
      const { store } = open(t, undefined);
      for (const seq of [1, 2, 5, 6, 7, 9, 12, 13]) add(store, chat('a', seq));
      assert.deepEqual(store.marks().get('a'), 2);
      assert.deepEqual(store.heldAbove('a', 2, 16), [
        [5, 7],
        [9, 9],
        [12, 13],
      ]);
      assert.deepEqual(store.heldAbove('a', 2, 2), [
        [5, 7],
        [9, 9],
      ]);
      assert.deepEqual(store.heldAbove('a', 13, 16), []);
      assert.deepEqual(store.heldAbove('nobody', 0, 16), []);
    });

    it('leaves out what the peer holds above its mark, and what was taken in after takenBy', (t) => {
      let now = T0;
      const { store } = open(t, undefined, {}, () => now);
      for (const seq of [1, 2, 3, 4, 5, 6]) {
        now = T0 + seq * 100;
        add(store, chat('a', seq));
      }
      const lacking = (options: Parameters<MessageStore['lacking']>[1]): string[] =>
        store.lacking(new Map([['a', 1]]), options).map((m) => m.frame.id);
      assert.deepEqual(lacking({}), ['a-2', 'a-3', 'a-4', 'a-5', 'a-6']);
      assert.deepEqual(lacking({ have: new Map([['a', [[3, 4]] as const]]) }), ['a-2', 'a-5', 'a-6']);
      assert.deepEqual(lacking({ takenBy: T0 + 400 }), ['a-2', 'a-3', 'a-4'], 'a-5 and a-6 are younger');
      assert.deepEqual(lacking({ have: new Map([['a', [[2, 3]] as const]]), takenBy: T0 + 400 }), ['a-4']);
      // A peer in a burst gets its gaps (below its highest range) and, above it, only the old tail.
      const young = T0; // every message was taken in after it: the whole tail is young
      assert.deepEqual(lacking({ tailTakenBy: young }), [], 'no range: no gap, the tail is on its way');
      assert.deepEqual(lacking({ tailTakenBy: T0 + 300 }), ['a-2', 'a-3'], 'a tail taken in long ago');
      assert.deepEqual(lacking({ have: new Map([['a', [[4, 4]] as const]]), tailTakenBy: young }), [
        'a-2',
        'a-3',
      ]);
      assert.deepEqual(
        lacking({
          have: new Map([
            [
              'a',
              [
                [3, 3],
                [5, 5],
              ] as const,
            ],
          ]),
          tailTakenBy: young,
        }),
        ['a-2', 'a-4'],
      );
    });

    it('gives a peer in a burst whose tail is young exactly the held messages between its mark and its highest range', () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.integer({ min: 1, max: 300 }), { maxLength: 120 }),
          fc.nat({ max: 300 }),
          fc.integer({ min: 1, max: 40 }),
          (seqs, mark, gap) => {
            const { store } = MessageStore.open(SELF, undefined, {}, clock);
            for (const seq of seqs) add(store, chat('a', seq));
            const range = [mark + gap, mark + gap + 2] as const;
            const got = store
              .lacking(new Map([['a', mark]]), { have: new Map([['a', [range]]]), tailTakenBy: -1 })
              .map((m) => m.frame.seq);
            const expected = seqs.filter((seq) => seq > mark && seq < range[0]).sort((x, y) => x - y);
            assert.deepEqual(got, expected);
          },
        ),
        { numRuns: 200 },
      );
    });

    it('answers a peer a little behind and one far behind alike (lookup and scan)', () => {
      fc.assert(
        fc.property(
          fc.uniqueArray(fc.integer({ min: 1, max: 300 }), { maxLength: 120 }),
          fc.nat({ max: 320 }),
          (seqs, mark) => {
            const { store } = MessageStore.open(SELF, undefined, {}, clock);
            for (const seq of seqs) add(store, chat('a', seq));
            const got = store.lacking(new Map([['a', mark]])).map((m) => m.frame.seq);
            const expected = seqs.filter((seq) => seq > mark).sort((x, y) => x - y);
            assert.deepEqual(got, expected);
          },
        ),
        { numRuns: 200 },
      );
    });

    it('keeps binary and JSON chat frames side by side across a restart and a compaction, each as its bytes', (t) => {
      const dir = tempDir(t, 'store');
      const frames = [chat('a', 1), chat('a', 2), chat('b', 1), chat('b', 2, T0, 'ünïcode 🌍')];
      const payloads = [
        encodeChat(frames[0]!),
        serializeFrame(frames[1]!),
        encodeChat(frames[2]!),
        encodeChat(frames[3]!),
      ];
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      frames.forEach((frame, i) => first.add(frame, payloads[i]!, i !== 2));
      first.close();
      for (let round = 0; round < 2; round++) {
        const { store, repair } = MessageStore.open(SELF, dir, {}, clock);
        assert.equal(repair, undefined);
        const held = store.recent(10);
        assert.deepEqual(
          held.map((m) => [m.frame.id, m.frame.text, m.verified]),
          frames.map((f, i) => [f.id, f.text, i !== 2]),
        );
        held.forEach((m, i) => assert.deepEqual(m.payload, payloads[i], `${m.frame.id}: its bytes`));
        assert.ok(frames.every((f, i) => store.holdsCopy(f.id, payloads[i]!)));
        store.close();
      }
    });

    it('keeps a message taken in unchecked as such across a restart and a compaction, so it is checked before it is sent on', (t) => {
      const dir = tempDir(t, 'store');
      const first = MessageStore.open(SELF, dir, {}, clock).store;
      first.add(chat('a', 1), serializeFrame(chat('a', 1)), false);
      first.add(chat('a', 2), serializeFrame(chat('a', 2)));
      assert.deepEqual(
        first.recent(2).map((m) => m.verified),
        [false, true],
      );
      first.close();
      // open() compacts: the rewritten log must keep the kind of each record.
      for (let round = 0; round < 2; round++) {
        const { store } = MessageStore.open(SELF, dir, {}, clock);
        assert.deepEqual(
          store.recent(2).map((m) => [m.frame.id, m.verified]),
          [
            ['a-1', false],
            ['a-2', true],
          ],
        );
        store.close();
      }
    });
  });
});
