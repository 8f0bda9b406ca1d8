import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bufferTime, concat, filter, from, type Observable } from 'rxjs';
import { createNode, dedup, type ChatMessage, type P2PNode } from '../../lib/index.js';

/** README's digest bot, with the buffer time as a parameter. */
function digest(node: P2PNode, everyMs: number): Observable<ChatMessage[]> {
  return concat(from(node.history(100)), node.messages$).pipe(
    filter((m) => m.from !== node.id),
    dedup({ key: (m) => m.id }),
    bufferTime(everyMs),
    filter((batch) => batch.length > 0),
  );
}

describe("README's custom pipeline", () => {
  it('shows the history it holds, then new messages, each once, in batches', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'p2p-digest-'));
    const nodes: P2PNode[] = [];
    t.after(async () => {
      await Promise.all(nodes.map((n) => n.close()));
      rmSync(dir, { recursive: true, force: true });
    });
    const timing = { backoff: { baseMs: 20, maxMs: 200 } };
    const alice = await createNode({ host: '127.0.0.1', nick: 'alice', timing });
    nodes.push(alice);
    // The bot runs once, receives two messages, and stops; they stay in its data directory.
    const first = await createNode({
      host: '127.0.0.1',
      dataDir: dir,
      timing,
      peers: [{ host: '127.0.0.1', port: alice.port }],
    });
    nodes.push(first);
    const seen: ChatMessage[] = [];
    first.messages$.subscribe((m) => seen.push(m));
    await waitFor(() => alice.peers().length === 1);
    alice.send('one');
    alice.send('two');
    await waitFor(() => seen.length === 2);
    await first.close();

    const bot = await createNode({
      host: '127.0.0.1',
      dataDir: dir,
      timing,
      peers: [{ host: '127.0.0.1', port: alice.port }],
    });
    nodes.push(bot);
    const batches: string[][] = [];
    const subscription = digest(bot, 100).subscribe((batch) => batches.push(batch.map((m) => m.text)));
    t.after(() => subscription.unsubscribe());
    await waitFor(() => alice.peers().length === 1);
    alice.send('three');
    await waitFor(() => batches.flat().includes('three'));
    assert.deepEqual(batches.flat(), ['one', 'two', 'three']);
  });
});

async function waitFor(predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
