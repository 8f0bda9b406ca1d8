import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { from, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { mergePeers } from '../../lib/operators/merge-peers.js';
import type { Inbound, PeerRef } from '../../lib/operators/types.js';
import { serializeFrame, type PeerEntry, type PeersFrame } from '../../lib/protocol/frames.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const SELF = 'self';
/** A neighbour connected from another host. */
const remote: PeerRef = { id: 'nb', host: '10.0.0.2' };

/** A peer list as it arrives from `peer`. */
function list(
  peer: PeerRef | null,
  ...entries: (readonly [id: string, addr: string])[]
): Inbound<PeersFrame> {
  const frame: PeersFrame = { type: 'peers', peers: entries.map(([id, addr]) => ({ id, addr })) };
  return { peer, frame, payload: serializeFrame(frame) };
}

const entry = (id: string, addr: string): PeerEntry => ({ id, addr });

describe('mergePeers', () => {
  it('emits each entry that names a node not known before', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '10.0.0.5:8000'], ['n2', '10.0.0.6:8000']),
        b: list(remote, ['n3', 'example.com:9000']),
      };
      const out = {
        x: entry('n1', '10.0.0.5:8000'),
        y: entry('n2', '10.0.0.6:8000'),
        z: entry('n3', 'example.com:9000'),
      };
      const source = hot('  -a----b-|', lists);
      const subs = '        ^-------!';
      const expected = '    -(xy)-z-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('does not emit a node again at the address it is known by', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '10.0.0.5:8000']),
        b: list({ id: 'other', host: '10.0.0.3' }, ['n1', '10.0.0.5:8000'], ['n2', '10.0.0.6:8000']),
      };
      const out = { x: entry('n1', '10.0.0.5:8000'), y: entry('n2', '10.0.0.6:8000') };
      const source = hot('  -a-b-a-|', lists);
      const subs = '        ^------!';
      const expected = '    -x-y---|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('emits a node again when it is known at another address', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '10.0.0.5:8000']),
        b: list(remote, ['n1', '10.0.0.5:8001']),
      };
      const out = { x: entry('n1', '10.0.0.5:8000'), y: entry('n1', '10.0.0.5:8001') };
      const source = hot('  -a-b-a-|', lists);
      const subs = '        ^------!';
      const expected = '    -x-y-x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips the entry that names this node', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = { a: list(remote, [SELF, '10.0.0.1:8000'], ['n1', '10.0.0.5:8000']) };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n1', '10.0.0.5:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips an unspecified address (0.0.0.0, ::)', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '0.0.0.0:8000'], ['n2', '[::]:8000'], ['n3', '[::ffff:0.0.0.0]:8000']),
        b: list(null, ['n4', '0.0.0.0:8000'], ['n5', '10.0.0.5:8000']),
      };
      const source = hot('  -a-b-|', lists);
      const subs = '        ^----!';
      const expected = '    ---x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n5', '10.0.0.5:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips an unspecified IPv6 address however it is written', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '[0:0:0:0:0:0:0:0]:8000'], ['n2', '[0::0]:8000'], ['n3', '10.0.0.5:8000']),
      };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n3', '10.0.0.5:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips an address that does not parse as host:port', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(
          remote,
          ['n1', 'nonsense'],
          ['n2', '10.0.0.5'],
          ['n3', '10.0.0.5:0'],
          ['n4', '10.0.0.5:70000'],
          ['n5', 'fe80::1:8000'],
          ['n6', '[fe80::1]8000'],
          ['n7', 'bad host:8000'],
          ['n8', ''],
          ['n9', '10.0.0.9:8000'],
        ),
      };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n9', '10.0.0.9:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips a loopback address received from a peer that is not on loopback', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(
          remote,
          ['n1', '127.0.0.1:8000'],
          ['n2', 'localhost:8000'],
          ['n3', '[::1]:8000'],
          ['n4', '127.9.9.9:8000'],
          ['n5', '[::ffff:127.0.0.1]:8000'],
          ['n6', '10.0.0.6:8000'],
        ),
      };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n6', '10.0.0.6:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips a loopback IPv6 address however it is written, from a peer not on loopback', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(
          remote,
          ['n1', '[0:0:0:0:0:0:0:1]:8000'],
          ['n2', '[::ffff:7f00:1]:8000'],
          ['n3', '10.0.0.6:8000'],
        ),
      };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n3', '10.0.0.6:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('skips an address in numeric IPv4 shorthand that means this host, from a peer not on loopback', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      // The resolver reads these as 127.0.0.1 and 0.0.0.0: an address pointing at this host.
      const lists = {
        a: list(
          remote,
          ['n1', '127.1:8000'],
          ['n2', '2130706433:8000'],
          ['n3', '0x7f.1:8000'],
          ['n4', '0:8000'],
          ['n5', '10.0.0.6:8000'],
        ),
      };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n5', '10.0.0.6:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('keeps a loopback address received from a peer on loopback', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list({ id: 'lb4', host: '127.0.0.1' }, ['n1', '127.0.0.1:8001']),
        b: list({ id: 'lb6', host: '::1' }, ['n2', '[::1]:8002']),
        c: list({ id: 'lbm', host: '::ffff:127.0.0.1' }, ['n3', 'localhost:8003']),
      };
      const out = {
        x: entry('n1', '127.0.0.1:8001'),
        y: entry('n2', '[::1]:8002'),
        z: entry('n3', 'localhost:8003'),
      };
      const source = hot('  -a-b-c-|', lists);
      const subs = '        ^------!';
      const expected = '    -x-y-z-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('keeps a loopback address in a list this node made itself', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = { a: list(null, ['n1', '127.0.0.1:8001']) };
      const source = hot('  -a-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n1', '127.0.0.1:8001'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('normalises the addresses it emits', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(
          remote,
          ['n1', 'Example.COM:8000'],
          ['n2', '[::FFFF:10.0.0.7]:8000'],
          ['n3', '[2001:DB8::1]:8000'],
          ['n4', '10.0.0.8:08000'],
        ),
      };
      const out = {
        w: entry('n1', 'example.com:8000'),
        x: entry('n2', '10.0.0.7:8000'),
        y: entry('n3', '[2001:db8::1]:8000'),
        z: entry('n4', '10.0.0.8:8000'),
      };
      const source = hot('  -a-----|', lists);
      const subs = '        ^------!';
      const expected = '    -(wxyz)|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('writes an IPv6 address in its canonical form', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '[2001:0DB8:0:0:0:0:0:1]:8000']),
        b: list(remote, ['n1', '[2001:db8::1]:8000']),
      };
      const source = hot('  -a-b-|', lists);
      const subs = '        ^----!';
      const expected = '    -x---|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n1', '[2001:db8::1]:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('does not emit a node again at the same address spelled differently', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', 'EXAMPLE.com:8000'], ['n2', '[::ffff:10.0.0.7]:8000']),
        b: list(remote, ['n1', 'example.com:8000'], ['n2', '10.0.0.7:8000']),
      };
      const out = { x: entry('n1', 'example.com:8000'), y: entry('n2', '10.0.0.7:8000') };
      const source = hot('  -a---b-|', lists);
      const subs = '        ^------!';
      const expected = '    -(xy)--|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('forgets the least recently used node beyond max', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      // max 2: n1 is looked at again (b) before n3 arrives, so n3 pushes out n2, not n1.
      const lists = {
        a: list(remote, ['n1', '10.0.0.1:8000'], ['n2', '10.0.0.2:8000']),
        b: list(remote, ['n1', '10.0.0.1:8000']),
        c: list(remote, ['n3', '10.0.0.3:8000']),
        d: list(remote, ['n1', '10.0.0.1:8000'], ['n2', '10.0.0.2:8000']),
      };
      const out = {
        x: entry('n1', '10.0.0.1:8000'),
        y: entry('n2', '10.0.0.2:8000'),
        z: entry('n3', '10.0.0.3:8000'),
      };
      const source = hot('  -a---b-c-d-|', lists);
      const subs = '        ^----------!';
      const expected = '    -(xy)--z-y-|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF, max: 2 }))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('emits a node again at the same address once rememberMs has passed since it was emitted', () => {
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable }) => {
      const lists = {
        a: list(remote, ['n1', '10.0.0.1:8000']),
        b: list(remote, ['n1', '10.0.0.1:8000'], ['n2', '10.0.0.2:8000']),
      };
      const out = { x: entry('n1', '10.0.0.1:8000'), y: entry('n2', '10.0.0.2:8000') };
      // rememberMs 5: n1 emitted at 1 is emitted again at 8 (7 later), n2 emitted at 4 not at 8
      // (4 later) but at 12 (8 later); n1 not at 12 (4 after 8).
      const source = hot('  -a--b---b---b-|', lists);
      const expected = '    -x--y---x---y-|';
      const merged = source.pipe(mergePeers({ selfId: SELF, rememberMs: 5, now: () => scheduler.now() }));
      expectObservable(merged).toBe(expected, out);
    });
  });

  it('completes when the source completes', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a--|', { a: list(remote, ['n1', '10.0.0.5:8000']) });
      const subs = '        ^---!';
      const expected = '    -x--|';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(expected, {
        x: entry('n1', '10.0.0.5:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes a source error through', () => {
    const error = new Error('ECONNRESET');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-#', { a: list(remote, ['n1', '10.0.0.5:8000']) }, error);
      const subs = '        ^--!';
      const expected = '    -x-#';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(
        expected,
        { x: entry('n1', '10.0.0.5:8000') },
        error,
      );
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when unsubscribed early', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n1', '10.0.0.1:8000']),
        b: list(remote, ['n2', '10.0.0.2:8000']),
        c: list(remote, ['n3', '10.0.0.3:8000']),
      };
      const source = hot('  -a-b-c-|', lists);
      const unsub = '       ----!';
      const subs = '        ^---!';
      const expected = '    -x-y';
      expectObservable(source.pipe(mergePeers({ selfId: SELF })), unsub).toBe(expected, {
        x: entry('n1', '10.0.0.1:8000'),
        y: entry('n2', '10.0.0.2:8000'),
      });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('keeps a separate table for each subscription of the same pipeline', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const a = list(remote, ['n1', '10.0.0.1:8000']);
      const source = cold(' -a-a|', { a });
      const merged$ = source.pipe(mergePeers({ selfId: SELF }));
      const x = { x: entry('n1', '10.0.0.1:8000') };
      // The second subscription sees n1 as new: the first subscription's table is not shared.
      expectObservable(merged$).toBe('-x--|', x);
      expectObservable(merged$, '---^').toBe('----x--|', x);
      expectSubscriptions(source.subscriptions).toBe(['^---!', '---^---!']);
    });
  });

  it('turns an unexpected exception into an error notification instead of skipping the entry', () => {
    // An entry that bypassed validation: its addr is not a string, so parsing throws a TypeError (a bug,
    // not an AddressError), which must surface rather than be swallowed.
    const broken = { type: 'peers', peers: [{ id: 'n1', addr: 42 }] } as unknown as PeersFrame;
    const error = new TypeError('text.startsWith is not a function');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const lists = {
        a: list(remote, ['n0', '10.0.0.1:8000']),
        b: { peer: remote, frame: broken, payload: Buffer.alloc(0) },
        c: list(remote, ['n2', '10.0.0.2:8000']),
      };
      const source = hot('  -a-b-c-|', lists);
      const subs = '        ^--!';
      const expected = '    -x-#';
      expectObservable(source.pipe(mergePeers({ selfId: SELF }))).toBe(
        expected,
        { x: entry('n0', '10.0.0.1:8000') },
        error,
      );
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    const lists = [
      list(remote, ['n1', '10.0.0.1:8000']),
      list(remote, ['n2', '10.0.0.2:8000'], ['n3', '10.0.0.3:8000']),
      list(remote, ['n4', '10.0.0.4:8000']),
      list(remote, ['n5', '10.0.0.5:8000']),
    ];
    testScheduler().run(({ expectObservable }) => {
      const source = from(lists).pipe(tap(() => (pulled += 1)));
      expectObservable(source.pipe(mergePeers({ selfId: SELF }), take(2))).toBe('(xy|)', {
        x: entry('n1', '10.0.0.1:8000'),
        y: entry('n2', '10.0.0.2:8000'),
      });
    });
    assert.equal(pulled, 2);
  });

  for (const max of [0, -1, 1.5, Number.NaN]) {
    it(`throws a RangeError at call time for max ${max}`, () => {
      assert.throws(() => mergePeers({ selfId: SELF, max }), RangeError);
    });
  }
  for (const rememberMs of [0, -1, Number.NaN]) {
    it(`throws a RangeError at call time for rememberMs ${rememberMs}`, () => {
      assert.throws(() => mergePeers({ selfId: SELF, rememberMs }), RangeError);
    });
  }
});
