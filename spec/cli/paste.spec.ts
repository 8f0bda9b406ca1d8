/**
 * A pasted block of lines (one read of stdin) is sent in batches: one signature and one log write per
 * 64 lines (lib/node/node.ts, SIGN_BATCH).
 * What a user sees must not change: every line is a message, in order, and a command among the lines
 * takes effect exactly between the lines around it.
 */
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { procsFor, type MessageEvent, type Proc, type SentEvent } from '../helpers/procs.js';

const isSent = (e: { event: string }): e is SentEvent & { seq: number } => e.event === 'sent';
const isMessage = (e: { event: string }): e is MessageEvent => e.event === 'message';

/** Node h (where lines are pasted) linked to node s, both real bin/p2p processes. */
async function linked(t: TestContext): Promise<{ s: Proc; h: Proc }> {
  const procs = procsFor(t);
  const s = await procs.node({ nick: 's' });
  const h = await procs.node({ nick: 'h', peers: [`127.0.0.1:${s.ready.port}`] });
  await h.waitForPeerUp(s.ready.id);
  return { s, h };
}

describe('a pasted block of lines', () => {
  it('goes out line by line in order, with a /nick among them applied between its neighbours', async (t) => {
    const { s, h } = await linked(t);
    const lines = Array.from({ length: 300 }, (_, i) => `paste ${i}`);
    // One write: the node reads it in one or a few chunks, each sent as a batch.
    h.write([...lines.slice(0, 150), '/nick bob', ...lines.slice(150)].join('\n') + '\n');
    const sent = await h.waitForEvents(isSent, lines.length, 8_000, 'a sent event per line');
    assert.deepEqual(
      sent.map((e) => e.seq),
      lines.map((_, i) => sent[0]!.seq + i),
      'consecutive sequence numbers, in the order typed',
    );
    const got = await s.waitForEvents(isMessage, lines.length, 8_000, 'every line at the peer');
    assert.deepEqual(
      got.map((m) => m.text),
      lines,
    );
    assert.deepEqual(
      got.map((m) => m.nick),
      lines.map((_, i) => (i < 150 ? 'h' : 'bob')),
    );
  });

  it('longer than the sender rate allows at once: paced, so the peer takes every line in order and defers none', async (t) => {
    const { s, h } = await linked(t);
    // 3,500 lines: 1,000 past the burst that peers take from one sender at once (LIMIT_DEFAULTS).
    const lines = Array.from({ length: 3_500 }, (_, i) => `line ${i}`);
    h.write(lines.join('\n') + '\n');
    const got = await s.waitForEvents(isMessage, lines.length, 30_000, 'every line at the peer');
    const sent = await h.waitForEvents(isSent, lines.length, 5_000, 'a sent event per line');
    assert.deepEqual(
      sent.map((e) => e.seq),
      lines.map((_, i) => sent[0]!.seq + i),
      'sent in the order typed',
    );
    // The pacing keeps 10 % below the peer's rate, and the peer measures it by the sender's clock
    // (message timestamps): how late the first burst reached it does not count against the rest.
    assert.deepEqual(
      got.map((m) => m.text),
      lines,
      'each line once, in order',
    );
    assert.doesNotMatch(s.stderr, /over \d+ messages\/s/, 'the peer deferred none over the rate');
  });

  it('ends cleanly on a /quit followed by more lines in the same read', async (t) => {
    const procs = procsFor(t);
    const h = await procs.node({ nick: 'h' });
    h.write('before\n/quit\nafter\n');
    const exit = await h.waitForExit();
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}; stderr: ${h.stderr}`);
    // A line after /quit goes out only if the node is still open when its batch is sent.
    const sent = h.events.filter(isSent).length;
    assert.ok(sent === 1 || sent === 2, `${sent} sent events`);
    assert.ok(!/RangeError|Error:/.test(h.stderr), h.stderr);
  });

  it('ends cleanly on /quit followed by a line in one read, in plain mode too', async (t) => {
    const procs = procsFor(t);
    const p = procs.spawn(['0', '--host', '127.0.0.1']);
    p.write('/quit\nhello\n');
    const exit = await p.waitForExit();
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}; stderr: ${p.stderr}`);
    assert.ok(!/RangeError|Error:/.test(p.stderr), p.stderr);
  });
});
