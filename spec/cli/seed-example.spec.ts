import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  freePorts,
  isMessage,
  isPeerDown,
  isPeerUp,
  procsFor,
  type Proc,
  type ReadyEvent,
} from '../helpers/procs.js';

/** Every message event a node printed with this text. */
const received = (proc: Proc, text: string) => proc.events.filter(isMessage).filter((m) => m.text === text);

describe('bin/p2p: the seed example', () => {
  it('delivers each line typed at one of three nodes exactly once to each of the other two', async (t) => {
    const procs = procsFor(t);
    const [p1, p2, p3] = (await freePorts(3)) as [number, number, number];
    const nicks = ['ann', 'bob', 'cyd'] as const;
    // The seed's command lines, unchanged, plus --json, a nickname and --host 127.0.0.1 (the tests
    // stay on loopback); started one after another.
    const lines = [
      [String(p1), `127.0.0.1:${p2}`, `127.0.0.1:${p3}`],
      [String(p2), `127.0.0.1:${p1}`, `127.0.0.1:${p3}`],
      [String(p3), `127.0.0.1:${p1}`, `127.0.0.1:${p2}`],
    ];
    const nodes: Proc[] = [];
    for (const [i, args] of lines.entries()) {
      const proc = procs.spawn([...args, '--json', '--nick', nicks[i]!, '--host', '127.0.0.1']);
      const ready = await proc.waitForEvent((e): e is ReadyEvent => e.event === 'ready', 8_000, 'ready');
      assert.equal(ready.port, [p1, p2, p3][i], 'listens on the port it was given');
      nodes.push(proc);
    }
    const ids = nodes.map((n) => n.ready!.id);
    await Promise.all(nodes.map((n) => n.waitForPeerCount(2)));
    for (const [i, node] of nodes.entries()) {
      const peers = new Set(node.events.filter(isPeerUp).map((e) => e.peer));
      assert.deepEqual(
        peers,
        new Set(ids.filter((_, j) => j !== i)),
        `${nicks[i]} is linked to the other two`,
      );
    }

    const texts = (i: number) => [1, 2, 3].map((k) => `${nicks[i]} says ${k}`);
    for (const [i, node] of nodes.entries()) for (const text of texts(i)) node.send(text);

    // Each node hears the six lines of the other two...
    await Promise.all(
      nodes.map((node, i) =>
        Promise.all(
          nodes.flatMap((_, j) => (j === i ? [] : texts(j).map((text) => node.waitForMessage(text)))),
        ),
      ),
    );
    // ...then each sends a marker. On each link the marker follows every copy of an earlier message
    // the sender relayed on it, so once a node has both markers, any duplicate would already be shown.
    for (const [i, node] of nodes.entries()) node.send(`${nicks[i]} done`);
    await Promise.all(
      nodes.map((node, i) =>
        Promise.all(nodes.flatMap((_, j) => (j === i ? [] : [node.waitForMessage(`${nicks[j]} done`)]))),
      ),
    );

    for (const [i, node] of nodes.entries()) {
      for (const [j] of nodes.entries()) {
        for (const text of [...texts(j), `${nicks[j]} done`]) {
          const copies = received(node, text);
          if (i === j) {
            assert.equal(copies.length, 0, `${nicks[i]} is never shown its own ${JSON.stringify(text)}`);
            continue;
          }
          assert.equal(copies.length, 1, `${nicks[i]} shows ${JSON.stringify(text)} exactly once`);
          assert.equal(copies[0]!.from, ids[j]);
          assert.equal(copies[0]!.nick, nicks[j]);
        }
      }
      assert.equal(node.events.filter((e) => e.event === 'sent').length, 4, `${nicks[i]} reports 4 sent`);
      assert.equal(node.events.filter(isPeerUp).length, 2, `${nicks[i]}: one peer-up per peer`);
      assert.deepEqual(node.events.filter(isPeerDown), [], `${nicks[i]}: no peer went down`);
      assert.deepEqual(node.nonJsonLines, [], `${nicks[i]}: stdout carries JSON events only`);
    }
  });

  it('learns the rest of the network through peer exchange from a single peer', async (t) => {
    const procs = procsFor(t);
    const hub = await procs.node({ nick: 'hub' });
    const hubAddr = `127.0.0.1:${hub.ready.port}`;
    const first = await procs.node({ nick: 'first', peers: [hubAddr] });
    await hub.waitForPeerUp(first.ready.id);
    const late = await procs.node({ nick: 'late', peers: [hubAddr] });

    const [viaHub, learned] = await Promise.all([
      late.waitForPeerUp(hub.ready.id),
      late.waitForPeerUp(first.ready.id),
    ]);
    assert.equal(viaHub.nick, 'hub');
    assert.equal(learned.nick, 'first');
    await first.waitForPeerUp(late.ready.id);

    late.send('hello from the late one');
    const [atHub, atFirst] = await Promise.all([
      hub.waitForMessage('hello from the late one'),
      first.waitForMessage('hello from the late one'),
    ]);
    assert.equal(atHub.from, late.ready.id);
    assert.equal(atFirst.nick, 'late');
  });

  it('a node refused by a full peer (--max-peers) warns, and never shows it joining or leaving', async (t) => {
    const procs = procsFor(t);
    const full = await procs.node({ nick: 'full', extra: ['--max-peers', '1'] });
    const fullAddr = `127.0.0.1:${full.ready.port}`;
    const first = await procs.node({ nick: 'first', peers: [fullAddr] });
    await full.waitForPeerUp(first.ready.id);
    const extra = await procs.node({ nick: 'extra', peers: [fullAddr] });
    const refused = `warn: peer ${full.ready.id.slice(0, 8)} at ${fullAddr} refused the connection: full`;
    await extra.waitUntil(
      () => (extra.stderrLines.filter((l) => l.endsWith(refused)).length >= 2 ? true : undefined),
      5_000,
      'two refusals on stderr',
    );
    assert.deepEqual(
      extra.events.filter((e) => isPeerUp(e) || isPeerDown(e)),
      [],
      'no peer-up or peer-down for the full node',
    );
    const refusal = full.stderrLines.find((l) =>
      l.includes(`refusing peer ${extra.ready.id.slice(0, 8)} at`),
    );
    assert.ok(refusal !== undefined, full.stderrLines.join('\n'));
    // Before: "already 1 peers".
    assert.match(refusal, /: already 1 peer, or about to be \(--max-peers\)$/);
    assert.equal(full.events.filter(isPeerUp).length, 1, 'the full node took only its first peer');
  });

  it('leaves with exit code 0 on SIGTERM and on SIGINT; the others see it go and chat on', async (t) => {
    const procs = procsFor(t);
    const hub = await procs.node({ nick: 'hub' });
    const hubAddr = `127.0.0.1:${hub.ready.port}`;
    const stay = await procs.node({ nick: 'stay', peers: [hubAddr] });
    const term = await procs.node({ nick: 'term', peers: [hubAddr] });
    const int = await procs.node({ nick: 'int', peers: [hubAddr] });
    const all = [hub, stay, term, int];
    await Promise.all(all.map((n) => n.waitForPeerCount(3, 10_000)));

    term.signal('SIGTERM');
    assert.deepEqual(await term.waitForExit(5_000), { code: 0, signal: null });
    for (const other of [hub, stay, int]) {
      const down = await other.waitForPeerDown(term.ready.id);
      assert.equal(down.nick, 'term');
      assert.ok(down.reason.length > 0, 'peer-down carries a reason');
    }

    int.signal('SIGINT');
    assert.deepEqual(await int.waitForExit(5_000), { code: 0, signal: null });
    await Promise.all([hub.waitForPeerDown(int.ready.id), stay.waitForPeerDown(int.ready.id)]);

    for (const gone of [term, int]) assert.doesNotMatch(gone.stderr, /^\s+at /m, 'no stack trace');

    hub.send('still here?');
    stay.send('yes');
    assert.equal((await stay.waitForMessage('still here?')).from, hub.ready.id);
    assert.equal((await hub.waitForMessage('yes')).from, stay.ready.id);
    assert.equal(hub.exit, undefined);
    assert.equal(stay.exit, undefined);
  });

  it('keeps running and relaying after its stdin reaches EOF', async (t) => {
    const procs = procsFor(t);
    // A line: left - middle - right. --max-peers 1 keeps the ends from linking to each other through
    // peer exchange, so what right receives from left went through middle.
    const middle = await procs.node({ nick: 'middle' });
    middle.endStdin();
    const mid = `127.0.0.1:${middle.ready.port}`;
    const left = await procs.node({ nick: 'left', peers: [mid], extra: ['--max-peers', '1'] });
    const right = await procs.node({ nick: 'right', peers: [mid], extra: ['--max-peers', '1'] });
    await Promise.all([
      middle.waitForPeerCount(2),
      left.waitForPeerUp(middle.ready.id),
      right.waitForPeerUp(middle.ready.id),
    ]);

    left.send('through the middle');
    const [atRight, atMiddle] = await Promise.all([
      right.waitForMessage('through the middle'),
      middle.waitForMessage('through the middle'),
    ]);
    assert.equal(atRight.from, left.ready.id);
    assert.equal(atMiddle.nick, 'left');
    assert.deepEqual(
      right.events.filter(isPeerUp).map((e) => e.peer),
      [middle.ready.id],
      'right is linked to middle only, so middle relayed it',
    );
    assert.equal(middle.exit, undefined, 'the node whose stdin ended is still running');

    middle.signal('SIGTERM');
    assert.deepEqual(await middle.waitForExit(5_000), { code: 0, signal: null });
  });
});
