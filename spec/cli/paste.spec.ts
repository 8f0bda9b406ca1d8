/**
 * A pasted block of lines (one read of stdin) is sent as one batch: one signature, one log write.
 * What a user sees must not change: every line is a message, in order, and a command among the lines
 * takes effect exactly between the lines around it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { procsFor, type MessageEvent, type SentEvent } from '../helpers/procs.js';

const isSent = (e: { event: string }): e is SentEvent & { seq: number } => e.event === 'sent';
const isMessage = (e: { event: string }): e is MessageEvent => e.event === 'message';

describe('a pasted block of lines', () => {
  it('goes out line by line in order, with a /nick among them applied between its neighbours', async (t) => {
    const procs = procsFor(t);
    const s = await procs.node({ nick: 's' });
    const h = await procs.node({ nick: 'h', peers: [`127.0.0.1:${s.ready.port}`] });
    await h.waitForPeerUp(s.ready.id);
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
});
