import assert from 'node:assert/strict';
import fs, { readFileSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { levelLogger } from '../../lib/node/log.js';
import type { ChatMessage, NodeOptions, P2PNode } from '../../lib/node/node.js';
import type { SyncFrame } from '../../lib/protocol/frames.js';
import {
  askSync,
  freePort,
  HOST,
  lineLogger,
  loopback,
  nodeFactory,
  rawPeer,
  record,
  waitFor,
  type RawPeer,
  type Recording,
} from '../helpers/nodes.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A fresh data directory, removed after the test: `t.after` hooks run in the order they were added,
 * so call it after `nodeFactory(t)` and the nodes are closed first.
 */
function dataDir(t: TestContext, name: string): string {
  return tempDir(t, `history-${name}`);
}

const idsOf = (messages: readonly ChatMessage[]): string[] => messages.map((m) => m.id);

/** Ids that occur more than once. */
function duplicates(ids: readonly string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const id of ids) (seen.has(id) ? twice : seen).add(id);
  return [...twice];
}

/** True when, for every sender, its messages come in increasing sequence order. */
function inOrderPerSender(messages: readonly ChatMessage[]): boolean {
  const last = new Map<string, number>();
  for (const m of messages) {
    if ((last.get(m.from) ?? 0) >= m.seq) return false;
    last.set(m.from, m.seq);
  }
  return true;
}

const sameSet = (a: readonly string[], b: readonly string[]): boolean =>
  a.length === b.length && new Set(a).size === a.length && b.every((id) => a.includes(id));

/** True when `node`'s history holds exactly the messages `ids`, each once. */
const holdsExactly = (node: P2PNode, ids: ReadonlySet<string>): boolean => {
  const held = idsOf(node.history(ids.size + 1));
  return held.length === ids.size && held.every((id) => ids.has(id));
};

/**
 * Sends `n` messages from each of `senders` in turn, in `rounds` rounds, and after each round waits
 * until every one of `receivers` (default: the senders) holds the last message of each sender: links
 * are FIFO, so it then holds the earlier ones too.
 */
async function chat(
  senders: readonly P2PNode[],
  n: number,
  label: string,
  { rounds = 1, receivers = senders }: { rounds?: number; receivers?: readonly P2PNode[] } = {},
): Promise<ChatMessage[]> {
  const sent: ChatMessage[] = [];
  for (let round = 0; round < rounds; round++) {
    const lasts: ChatMessage[] = [];
    for (let i = 0; i < n / rounds; i++) {
      lasts.length = 0;
      for (const node of senders) {
        const message = node.send(`${label} ${node.nick} ${round}.${i}`);
        sent.push(message);
        lasts.push(message);
      }
    }
    const recent = (2 * n * senders.length) / rounds + 10;
    await waitFor(
      () =>
        receivers.every((node) => {
          const held = new Set(idsOf(node.history(recent)));
          return lasts.every((m) => held.has(m.id));
        }),
      `${label}: round ${round} to reach every node`,
      10_000,
    );
  }
  return sent;
}

describe('history: nothing lost (in-process nodes)', () => {
  it('gives a node that joins after 1,000 messages the whole window, in order per sender, each once', async (t) => {
    const start = nodeFactory(t);
    const history = { maxMessages: 600 };
    const a = await start({ nick: 'a', history });
    // targetPeers 1: b and the joiner talk to a only, so the joiner's backlog is a's window exactly.
    const b = await start({ nick: 'b', history, peers: [loopback(a.port)], targetPeers: 1 });
    await waitFor(() => a.peers().length === 1, 'a and b to connect');
    const sent = await chat([a, b], 500, 'early', { rounds: 10 });
    assert.equal(sent.length, 1_000);
    const window = a.history(10_000);
    assert.equal(window.length, 600, 'a keeps its window of 600 out of 1,000');

    const joinedAt = Date.now();
    const j = await start({
      nick: 'j',
      history,
      peers: [loopback(a.port)],
      targetPeers: 1,
      dataDir: dataDir(t, 'joiner'),
    });
    const inbox = record(j.messages$);
    await waitFor(() => inbox.values.length >= 600, 'the joiner to receive the window', 10_000);
    t.diagnostic(`late join: ${inbox.values.length} messages of the window in ${Date.now() - joinedAt} ms`);

    const received = idsOf(inbox.values);
    assert.deepEqual(duplicates(received), [], 'each message once');
    assert.ok(sameSet(received, idsOf(window)), "exactly a's window");
    assert.ok(inOrderPerSender(inbox.values), 'in order per sender');
    const joinedHistory = j.history(600);
    assert.ok(sameSet(idsOf(joinedHistory), idsOf(window)), 'history(600) holds the window');
    assert.ok(inOrderPerSender(joinedHistory));
    assert.ok(inOrderPerSender(j.history(50)));
    assert.deepEqual(
      j
        .history(600)
        .map((m) => [m.from, m.seq, m.text])
        .sort(),
      window.map((m) => [m.from, m.seq, m.text]).sort(),
      'the same messages, field by field',
    );
  });

  it("shows a late joiner the conversation's last n messages, not the last n of one sender", async (t) => {
    const start = nodeFactory(t);
    const a = await start({ nick: 'a' });
    const b = await start({ nick: 'b', peers: [loopback(a.port)], targetPeers: 1 });
    await waitFor(() => a.peers().length === 1, 'a and b to connect');
    await chat([a, b], 10, 'turn', { rounds: 10 }); // a, b, a, b, ... one round trip at a time
    const j = await start({ nick: 'j', peers: [loopback(a.port)], targetPeers: 1 });
    const inbox = record(j.messages$);
    await waitFor(() => inbox.values.length >= 20, 'the joiner to catch up');
    assert.deepEqual(
      j.history(4).map((m) => m.text),
      a.history(4).map((m) => m.text),
    );
  });

  it('gives a node that restarts with its data dir exactly the messages it missed, once, and keeps its id', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t, 'restart');
    const a = await start({ nick: 'a' });
    const options: NodeOptions = { nick: 'b', peers: [loopback(a.port)], dataDir: dir };
    const b = await start(options);
    const before = record(b.messages$);
    await waitFor(() => a.peers().length === 1, 'a and b to connect');
    const early = await chat([a], 50, 'before', { receivers: [a, b] });
    const own = await chat([b], 5, 'own', { receivers: [a, b] });
    assert.deepEqual(
      own.map((m) => m.seq),
      [1, 2, 3, 4, 5],
    );
    assert.equal(before.values.length, 50);
    await b.close();
    await waitFor(() => a.peers().length === 0, 'a to see b go');

    const missed = await chat([a], 30, 'missed');
    const aInbox = record(a.messages$);
    const restartedAt = Date.now();
    const b2 = await start(options);
    const after = record(b2.messages$);
    assert.equal(b2.id, b.id, 'the same node id after the restart');
    await waitFor(() => after.values.length >= 30, 'b to fetch what it missed', 10_000);
    t.diagnostic(`restart: ${after.values.length} missed messages fetched in ${Date.now() - restartedAt} ms`);
    // One more message through the link: anything that would come twice has come by then.
    const [barrier] = await chat([a], 1, 'barrier', { receivers: [a, b2] });
    assert.deepEqual(
      idsOf(after.values),
      [...idsOf(missed), barrier!.id],
      'the missed ones, in order, once, then the new one; nothing it had already',
    );
    const all = idsOf([...early, ...own, ...missed, barrier!]);
    assert.ok(sameSet(idsOf(b2.history(1_000)), all), 'its history holds what it had and what it missed');
    const next = b2.send('after the restart');
    assert.equal(next.seq, 6, 'its own sequence numbers go on');
    await waitFor(() => aInbox.values.some((m) => m.id === next.id), 'a to get the new message');
    assert.deepEqual(duplicates(idsOf(aInbox.values)), []);
  });

  it('does not reuse its sequence numbers after its log lost its last own messages', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t, 'torn');
    const a = await start({ nick: 'a' });
    const aInbox = record(a.messages$);
    const b = await start({ nick: 'b', peers: [loopback(a.port)], dataDir: dir });
    await waitFor(() => a.peers().length === 1, 'a and b to connect');
    const own = await chat([b], 5, 'own', { receivers: [a, b] });
    await b.close();
    // Tear the log in the second own message: b keeps its first one only.
    const path = join(dir, 'messages.log');
    const log = readFileSync(path);
    writeFileSync(path, log.subarray(0, log.indexOf(own[1]!.id) + 4));
    const b2 = await start({ nick: 'b', dataDir: dir }); // alone: a is not dialled yet
    const next = b2.send('after the repair');
    b2.connect(loopback(a.port));
    assert.ok(next.seq > 5, `seq ${next.seq} after 5 sent before the restart`);
    // With a reused number, a holds another message under it and drops this one as known.
    await waitFor(() => aInbox.values.some((m) => m.id === next.id), 'a to get the new message');
  });

  it('says once in its log when its history cannot be compacted, and goes on writing it to disk', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t, 'compaction');
    const lines: string[] = [];
    const log = levelLogger('debug', (line) => lines.push(line));
    const history = { maxMessages: 10 };
    const a = await start({ nick: 'a', dataDir: dir, history, log });
    // The file of its compaction in the background cannot be opened (no descriptor left); its log can.
    const next = join(dir, 'messages.log.next');
    const realOpen = fs.openSync;
    t.after(() => {
      t.mock.restoreAll();
      syncBuiltinESMExports();
    });
    t.mock.method(fs, 'openSync', (file: string, flags: string, mode?: number): number => {
      if (file === next) {
        throw Object.assign(new Error(`EMFILE: too many open files, open '${file}'`), {
          errno: -24,
          code: 'EMFILE',
          syscall: 'open',
        });
      }
      return realOpen(file, flags, mode);
    });
    syncBuiltinESMExports();
    // Four windows: the log is due for a compaction from the 22nd on; the next try waits 5 s.
    const sent = Array.from({ length: 40 }, (_, i) => a.send(`message ${i + 1}`));
    t.mock.restoreAll();
    syncBuiltinESMExports();
    const said = lines.filter((line) => line.includes('history:'));
    assert.equal(said.length, 1, said.join('\n'));
    assert.match(
      said[0]!,
      /^warn: history: cannot compact the log in .+ \(EMFILE: too many open files, open .+\); messages are still written to it, which grows until a compaction works/,
    );
    await a.close();
    // Every message on disk, none kept in memory only: a restart with room for them all holds them.
    const again = await start({ nick: 'a', dataDir: dir, history: { maxMessages: 40 } });
    assert.deepEqual(idsOf(again.history(40)), idsOf(sent));
    assert.equal(
      again.send('after the restart').seq,
      41,
      'numbered right after: no write failed (after one, a restart numbers above the reserved block)',
    );
  });

  it('starts when its disk has no room for the compaction at the start, says so once, and keeps its history on disk', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t, 'fullstart');
    const history = { maxMessages: 10 };
    const a = await start({ nick: 'a', dataDir: dir, history });
    const sent = Array.from({ length: 15 }, (_, i) => a.send(`message ${i + 1}`));
    await a.close();
    // Every write of the start's compaction fails as on a full disk.
    fs.symlinkSync('/dev/full', join(dir, 'messages.log.tmp'));
    const lines: string[] = [];
    const log = levelLogger('debug', (line) => lines.push(line));
    const again = await start({ nick: 'a', dataDir: dir, history, log });
    const said = lines.filter((line) => line.includes('history:'));
    assert.equal(said.length, 1, said.join('\n'));
    assert.match(
      said[0]!,
      /^warn: history: cannot compact the log in .+ \(ENOSPC: no space left on device, write\)/,
    );
    assert.deepEqual(idsOf(again.history(10)), idsOf(sent.slice(5)));
    const after = again.send('after the start');
    assert.equal(after.seq, 16, 'numbered right after: its log holds what it sent');
    await again.close();
    const third = await start({ nick: 'a', dataDir: dir, history: { maxMessages: 20 } });
    assert.deepEqual(idsOf(third.history(20)), idsOf([...sent, after]));
  });

  it("does not take a peer's sync mark for its own id as its counter (sync frames are unsigned)", async (t) => {
    const start = nodeFactory(t);
    const a = await start({ nick: 'a' });
    const b = await start({ nick: 'b', peers: [loopback(a.port)] });
    const bInbox = record(b.messages$);
    await waitFor(() => a.peers().length === 1 && b.peers().length === 1, 'a and b to connect');
    const first = a.send('before');
    // b claims to hold a's messages up to 2^53 - 2: a forged mark (b is not a's signer).
    const internals = b as unknown as {
      active: Map<string, { conn: unknown }>;
      sendSync: (conn: unknown, sync: unknown) => void;
    };
    internals.sendSync(internals.active.get(a.id)!.conn, {
      type: 'sync',
      marks: [{ from: a.id, seq: Number.MAX_SAFE_INTEGER - 1 }],
    });
    await waitFor(() => bInbox.values.some((m) => m.id === first.id), 'b to get the first message');
    await new Promise((resolve) => setTimeout(resolve, 100)); // the sync is read by now
    const next = a.send('after');
    assert.equal(next.seq, first.seq + 1, 'numbering goes on from its own counter');
    await waitFor(() => bInbox.values.some((m) => m.id === next.id), 'b to get the next message');
  });

  it('leaves both sides of a healed partition holding every message exactly once', async (t) => {
    const start = nodeFactory(t);
    // Nodes that advertise an address where nothing listens can only be reached by a dial given by
    // hand: so peer exchange cannot route around the bridge b, and closing b is a real partition.
    const nowhere = { host: HOST, port: await freePort() };
    const side = { advertise: nowhere, learnedDialAttempts: 1 } satisfies NodeOptions;
    const a1 = await start({ nick: 'a1', ...side });
    const a2 = await start({ nick: 'a2', ...side, peers: [loopback(a1.port)] });
    const c1 = await start({ nick: 'c1', ...side });
    const c2 = await start({ nick: 'c2', ...side, peers: [loopback(c1.port)] });
    const bOptions: NodeOptions = {
      nick: 'b',
      peers: [loopback(a2.port), loopback(c2.port)],
      dataDir: dataDir(t, 'bridge'),
    };
    const b = await start(bOptions);
    const sides = [a1, a2, c1, c2];
    const inboxes = new Map<P2PNode, Recording<ChatMessage>>(sides.map((n) => [n, record(n.messages$)]));
    const bBefore = record(b.messages$);
    await waitFor(() => a2.peers().length >= 2 && c2.peers().length >= 2, 'the bridge to connect both sides');

    const together = await chat([...sides, b], 20, 'together');
    await b.close();
    await waitFor(
      () => sides.every((n) => !n.peers().some((p) => p.id === b.id)),
      'both sides to lose the bridge',
    );
    const aSide = await chat([a1, a2], 30, 'a-side');
    const cSide = await chat([c1, c2], 30, 'c-side');
    const crossed = [a1, a2].some((n) => inboxes.get(n)!.values.some((m) => m.text.startsWith('c-side')));
    assert.equal(crossed, false, 'the sides were cut off from each other');
    const cIds = new Set([c1.id, c2.id]);
    assert.ok(
      [a1, a2].every((n) => n.peers().every((p) => !cIds.has(p.id))),
      'no link across',
    );

    const healedAt = Date.now();
    const b2 = await start(bOptions);
    const bAfter = record(b2.messages$);
    const everything = new Set(idsOf([...together, ...aSide, ...cSide]));
    await waitFor(
      () => [...sides, b2].every((n) => holdsExactly(n, everything)),
      'every node to hold every message',
      10_000,
    );
    const healMs = Date.now() - healedAt;
    t.diagnostic(
      `heal → full delivery in ${healMs} ms (${aSide.length} + ${cSide.length} messages across, 5 nodes)`,
    );

    assert.equal(b2.id, b.id);
    for (const node of sides) {
      const got = idsOf(inboxes.get(node)!.values);
      assert.deepEqual(duplicates(got), [], `${node.nick} got each message once`);
      const own = new Set(idsOf([...together, ...aSide, ...cSide].filter((m) => m.from === node.id)));
      assert.ok(
        sameSet(
          got,
          [...everything].filter((id) => !own.has(id)),
        ),
        `${node.nick} got every message but its own`,
      );
      assert.ok(inOrderPerSender(inboxes.get(node)!.values), `${node.nick}: in order per sender`);
    }
    const bGot = [...idsOf(bBefore.values), ...idsOf(bAfter.values)];
    assert.deepEqual(duplicates(bGot), [], 'the bridge got each message once, across its restart');
    assert.ok(
      sameSet(idsOf(bAfter.values), idsOf([...aSide, ...cSide])),
      'after the restart: what it missed',
    );
  });
});

describe('history: messages over a lowered maxFrameBytes', () => {
  /** The ids of the messages the node sends back for `sync` (its whole answer: {@link askSync}). */
  const ask = async (peer: RawPeer, sync: Omit<SyncFrame, 'type'>): Promise<string[]> =>
    (await askSync(peer, sync)).map((f) => f.id);

  it('keeps what a run with a larger limit held, leaves it out of every resync (one log line) and sends the rest', async (t) => {
    const start = nodeFactory(t);
    const dir = dataDir(t, 'lowered');
    const long = 'ü'.repeat(10_000); // 20,000 bytes of UTF-8: a frame of about 20 KB, over 8 KiB
    const a = await start({ nick: 'a', dataDir: dir });
    const b = await start({ nick: 'b', peers: [loopback(a.port)] });
    await waitFor(() => a.peers().length === 1, 'a and b to connect');
    const sent = [
      a.send('short 1'),
      a.send(long),
      a.send('short 2'),
      b.send(`${long} of b`),
      b.send('short of b'),
    ];
    const all = new Set(idsOf(sent));
    await waitFor(() => holdsExactly(a, all), 'a to hold all five');
    await b.close();
    await a.close();

    const log = lineLogger();
    const a2 = await start({ nick: 'a', dataDir: dir, maxFrameBytes: 8 * 1024, log });
    assert.ok(holdsExactly(a2, all), 'the long ones are kept, and shown in its history');
    /** Lines about them a user sees (debug ones aside: a resync names the peer it left them out for). */
    const told = (): string[] =>
      log.lines.filter((line) => !line.startsWith('debug:') && line.includes('over maxFrameBytes'));
    const atStart = told();

    // A peer that lacks everything asks, again and again: each answer holds the three short ones and
    // neither long one (before, the first answer threw a RangeError out of Connection#write, uncaught).
    const peer = await rawPeer(t, a2.port, { answerPings: true, binary: true });
    await waitFor(() => a2.peers().length === 1, 'the raw peer to be up');
    const shorts = [sent[0]!, sent[2]!, sent[4]!].map((m) => m.id).sort();
    for (let i = 1; i <= 3; i++)
      assert.deepEqual((await ask(peer, { marks: [] })).sort(), shorts, `answer ${i}`);
    assert.equal(a2.peers().length, 1, 'the peer is still connected');
    const after = a2.send('still up');
    await waitFor(() => peer.frames.some((f) => f.type === 'chat' && f.id === after.id), 'a new message');

    // A real node that joins fetches the short ones; its gap repair asks for the long one of a in
    // vain, and a says nothing more about it.
    const j = await start({ nick: 'j', peers: [loopback(a2.port)] });
    const expected = new Set([...shorts, after.id]);
    await waitFor(() => holdsExactly(j, expected), 'the joiner to hold the short ones');
    await waitFor(() => j.stats().gapRepairs >= 2, "the joiner to ask for a's long message, from every peer");
    assert.equal(atStart.length, 1, atStart.join('\n'));
    assert.match(
      atStart[0]!,
      /^warn: history: 2 messages held \(the longest \d+ bytes\) are over maxFrameBytes \(8192\), from a run with a larger limit: kept and shown, never sent to peers/,
    );
    assert.deepEqual(told(), atStart, 'the line at start, and no other');
    assert.ok(log.count('debug: resync: leaving out 2 held messages over maxFrameBytes') >= 3);
    assert.equal(a2.peers().length, 2, 'both peers still connected');
  });
});
