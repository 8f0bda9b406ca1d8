import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { from, map, of, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { relay, relayTargets, type Relayed } from '../../lib/operators/relay.js';
import type { Inbound, PeerRef } from '../../lib/operators/types.js';
import { serializeFrame, type ChatFrame } from '../../lib/protocol/frames.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const peerA: PeerRef = { id: 'pa', host: '10.0.0.1' };
const peerB: PeerRef = { id: 'pb', host: '10.0.0.2' };

/** A chat message with id `id`, delivered by `peer` (null: written on this node). */
function chat(id: string, peer: PeerRef | null): Inbound<ChatFrame> {
  const frame: ChatFrame = {
    type: 'chat',
    id,
    from: 'author',
    nick: 'ann',
    ts: 1_700_000_000_000,
    seq: 1,
    text: `text ${id}`,
    key: 'ab'.repeat(32),
    sig: 'A'.repeat(86),
  };
  return { peer, frame, payload: serializeFrame(frame) };
}

const relayed = (message: Inbound<ChatFrame>, to: readonly string[]): Relayed => ({
  frame: message.frame,
  payload: message.payload,
  to,
});

const m = { a: chat('m1', peerA), b: chat('m2', peerB), c: chat('m3', null), d: chat('m4', peerA) };
const lists = {
  p: ['pa', 'pb', 'pc'],
  q: ['pa', 'pc'],
  o: ['pa'],
  e: [],
} satisfies Record<string, readonly string[]>;

describe('relay', () => {
  it('sends a message to every peer but the one it came from', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p-------', lists);
      const source = hot('  -a-b---|', m);
      const subs = '        ^------!';
      const expected = '    -x-y---|';
      const out = { x: relayed(m.a, ['pb', 'pc']), y: relayed(m.b, ['pa', 'pc']) };
      expectObservable(source.pipe(relay(peers$))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('sends a message written on this node to every peer', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p----', lists);
      const source = hot('  -c--|', m);
      const subs = '        ^---!';
      const expected = '    -x--|';
      expectObservable(source.pipe(relay(peers$))).toBe(expected, { x: relayed(m.c, ['pa', 'pb', 'pc']) });
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('uses the latest list of peers', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p--q------', lists);
      const source = hot('  -c---c-d-|', m);
      const subs = '        ^--------!';
      const expected = '    -x---y-z-|';
      const out = { x: relayed(m.c, lists.p), y: relayed(m.c, lists.q), z: relayed(m.d, ['pc']) };
      expectObservable(source.pipe(relay(peers$))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('hands on the payload bytes it received, not a copy', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p----', lists);
      const source = hot('  -a--|', m);
      const subs = '        ^---!';
      const expected = '    -t--|';
      const samePayload$ = source.pipe(
        relay(peers$),
        map(({ payload }) => payload === m.a.payload),
      );
      expectObservable(samePayload$).toBe(expected, { t: true });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('drops a message that arrives before peers$ has emitted', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  ---p-----', lists);
      const source = hot('  -ac--b--|', m);
      const subs = '        ^-------!';
      const expected = '    -----x--|';
      expectObservable(source.pipe(relay(peers$))).toBe(expected, { x: relayed(m.b, ['pa', 'pc']) });
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('drops a message when nobody but its origin is connected', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  o--e------', lists);
      const source = hot('  -a-----c-|', m);
      const subs = '        ^--------!';
      const expected = '    ---------|';
      // a comes from the only peer; c, written here, finds the list empty.
      expectObservable(source.pipe(relay(peers$))).toBe(expected);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('keeps relaying with the last list after peers$ completes', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p-|', lists);
      const source = hot('  -a--b-|', m);
      const peerSubs = '    ^-!';
      const subs = '        ^-----!';
      const expected = '    -x--y-|';
      const out = { x: relayed(m.a, ['pb', 'pc']), y: relayed(m.b, ['pa', 'pc']) };
      expectObservable(source.pipe(relay(peers$))).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(peerSubs);
    });
  });

  it('completes when the source completes, leaving peers$', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p-----q--', lists);
      const source = hot('  -a--|', m);
      const subs = '        ^---!';
      const expected = '    -x--|';
      expectObservable(source.pipe(relay(peers$))).toBe(expected, { x: relayed(m.a, ['pb', 'pc']) });
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('passes a source error through, leaving peers$', () => {
    const error = new Error('source failed');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p------', lists);
      const source = hot('  -a-#', m, error);
      const subs = '        ^--!';
      const expected = '    -x-#';
      expectObservable(source.pipe(relay(peers$))).toBe(expected, { x: relayed(m.a, ['pb', 'pc']) }, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('passes on an error of peers$, leaving the source', () => {
    const error = new Error('peer table failed');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p--#', lists, error);
      const source = hot('  -a---b-|', m);
      const subs = '        ^--!';
      const expected = '    -x-#';
      expectObservable(source.pipe(relay(peers$))).toBe(expected, { x: relayed(m.a, ['pb', 'pc']) }, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('leaves the source and peers$ when unsubscribed early', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const peers$ = hot('  p-------', lists);
      const source = hot('  -a-b-d-|', m);
      const unsub = '       ----!';
      const subs = '        ^---!';
      const expected = '    -x-y';
      const out = { x: relayed(m.a, ['pb', 'pc']), y: relayed(m.b, ['pa', 'pc']) };
      expectObservable(source.pipe(relay(peers$)), unsub).toBe(expected, out);
      expectSubscriptions(source.subscriptions).toBe(subs);
      expectSubscriptions(peers$.subscriptions).toBe(subs);
    });
  });

  it('relays for each subscription of the same pipeline on its own', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const peers$ = cold(' p', lists);
      const source = cold(' -a-a|', m);
      const relayed$ = source.pipe(relay(peers$));
      const x = { x: relayed(m.a, ['pb', 'pc']) };
      expectObservable(relayed$).toBe('-x-x|', x);
      expectObservable(relayed$, '---^').toBe('----x-x|', x);
      expectSubscriptions(source.subscriptions).toBe(['^---!', '---^---!']);
      expectSubscriptions(peers$.subscriptions).toBe(['^---!', '---^---!']);
    });
  });

  it('skips the peers the delivering peer said it is connected to (they have it from it)', () => {
    // pa's latest peer list named pb: a message pa delivers goes to pc only; one written here, or
    // delivered by pb (whose list is unknown), goes to all the others as before.
    const viaA = chat('m5', { ...peerA, neighbours: new Set(['pb', 'px']) });
    testScheduler().run(({ hot, expectObservable }) => {
      const peers$ = hot('  p------', lists);
      const source = hot('  -a-b-c|', { a: viaA, b: m.b, c: m.c });
      const out = { x: relayed(viaA, ['pc']), y: relayed(m.b, ['pa', 'pc']), z: relayed(m.c, lists.p) };
      expectObservable(source.pipe(relay(peers$))).toBe('-x-y-z|', out);
    });
  });

  it("with a view of its peers' lists, leaves a peer to a neighbour of the deliverer with a smaller id", () => {
    // pa (the deliverer) is connected to pe and pz; pb is connected to pe (< 'pm', this node): pe had
    // the message from pa and sends it to pb. pc is connected to pz only (> 'pm'): this node sends.
    const viaA = chat('m7', { ...peerA, neighbours: new Set(['pe', 'pz']) });
    const lists$ = new Map<string, ReadonlySet<string>>([
      ['pe', new Set(['pa', 'pb'])], // pe confirms its link to pa
      ['pb', new Set(['pe', 'pm'])],
      ['pc', new Set(['pz'])],
    ]);
    const view = { selfId: 'pm', neighboursOf: (id: string) => lists$.get(id) };
    testScheduler().run(({ hot, expectObservable }) => {
      const peers$ = hot('  p------', lists);
      const source = hot('  -a-b-c|', { a: viaA, b: m.b, c: m.c });
      // m.b (from pb, whose list is unknown) and m.c (written here) are not affected by the view.
      const out = { x: relayed(viaA, ['pc']), y: relayed(m.b, ['pa', 'pc']), z: relayed(m.c, lists.p) };
      expectObservable(source.pipe(relay(peers$, view))).toBe('-x-y-z|', out);
    });
  });

  it('with a versioned view, reuses the targets of the last message from the same peer until the version changes', () => {
    const fromA: PeerRef = { ...peerA, neighbours: new Set(['pb', 'pc']) };
    const [a, b, c, d] = [chat('m1', fromA), chat('m2', fromA), chat('m3', fromA), chat('m4', fromA)];
    /** Relays a..d, pc dropping its link to pa between b and c; how often the view was walked. */
    const run = (versioned: boolean): number => {
      const lists$ = new Map<string, ReadonlySet<string>>([
        ['pb', new Set(['pa'])],
        ['pc', new Set(['pa'])],
      ]);
      let version = 0;
      let walks = 0;
      const view = {
        selfId: 'pm',
        neighboursOf: (id: string) => {
          walks++;
          return lists$.get(id);
        },
        ...(versioned ? { version: () => version } : {}),
      };
      testScheduler().run(({ hot, cold, expectObservable }) => {
        const peers$ = hot('p------', lists);
        const change = cold('---x|').pipe(
          tap(() => {
            lists$.set('pc', new Set(['pz']));
            version++;
          }),
        );
        const source = hot('-a-b-c-d|', { a, b, c, d });
        expectObservable(change).toBe('---x|');
        expectObservable(source.pipe(relay(peers$, view))).toBe('-----y-z|', {
          y: relayed(c, ['pc']),
          z: relayed(d, ['pc']),
        });
      });
      return walks;
    };
    const unversioned = run(false);
    assert.ok(unversioned > 0);
    // Computed for a and c only: b and d took the answer of the message before them.
    assert.equal(run(true) * 2, unversioned);
  });

  it('with a view, believes a link only when both ends list it', () => {
    // pa claims pb and pc; pb lists pa back, pc does not: pc still gets the message.
    const viaA = chat('m8', { ...peerA, neighbours: new Set(['pb', 'pc']) });
    const lists$ = new Map<string, ReadonlySet<string>>([
      ['pb', new Set(['pa'])],
      ['pc', new Set(['pq'])],
    ]);
    const view = { selfId: 'pm', neighboursOf: (id: string) => lists$.get(id) };
    testScheduler().run(({ hot, expectObservable }) => {
      const peers$ = hot('  p----', lists);
      const source = hot('  -a--|', { a: viaA });
      expectObservable(source.pipe(relay(peers$, view))).toBe('-x--|', { x: relayed(viaA, ['pc']) });
    });
  });

  it('drops a message whose every other peer is a neighbour of the peer that delivered it', () => {
    const viaA = chat('m6', { ...peerA, neighbours: new Set(['pb', 'pc']) });
    testScheduler().run(({ hot, expectObservable }) => {
      const peers$ = hot('  p----', lists);
      const source = hot('  -a--|', { a: viaA });
      expectObservable(source.pipe(relay(peers$))).toBe('----|');
    });
  });

  it('passes on that a message was let through without its signature checked', () => {
    const unchecked: Inbound<ChatFrame> = { ...m.a, unverified: true };
    testScheduler().run(({ hot, expectObservable }) => {
      const peers$ = hot('  p----', lists);
      const source = hot('  -a--|', { a: unchecked });
      const out = { x: { ...relayed(m.a, ['pb', 'pc']), unverified: true as const } };
      expectObservable(source.pipe(relay(peers$))).toBe('-x--|', out);
    });
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    testScheduler().run(({ expectObservable }) => {
      const source = from([m.a, m.b, m.c, m.d]).pipe(tap(() => (pulled += 1)));
      const out = { x: relayed(m.a, ['pb', 'pc']), y: relayed(m.b, ['pa', 'pc']) };
      expectObservable(source.pipe(relay(of(lists.p)), take(2))).toBe('(xy|)', out);
    });
    assert.equal(pulled, 2);
  });
});

describe('relayTargets across whole networks (a simulation with accurate peer lists)', () => {
  /** A seeded generator, so the figures below are the same on every run. */
  const random = (seed: number) => (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };

  /** A denser graph than the default's: `nodes` nodes, `links` random links on top of a spanning tree. */
  interface Shape {
    readonly nodes: number;
    readonly links: number;
    /** The share of links 5-25x slower than the others (a backlog, a slow peer). */
    readonly slow: number;
  }

  /**
   * Floods one message from node 0 of a random connected graph (by default of 4-29 nodes, sparse)
   * with random link delays; every node relays with relayTargets as the node does. Returns the
   * nodes it missed and the wire sends.
   */
  function broadcast(
    seed: number,
    withView: boolean,
    shape?: Shape,
  ): { missed: number; sends: number; nodes: number } {
    const r = random(seed);
    const n = shape?.nodes ?? 4 + Math.floor(r() * 26);
    const ids = Array.from({ length: n }, (_, i) => `n${String(Math.floor(r() * 1e6)).padStart(7, '0')}${i}`);
    const adj = ids.map(() => new Set<number>());
    for (let i = 1; i < n; i++) {
      const j = Math.floor(r() * i);
      adj[i]!.add(j);
      adj[j]!.add(i);
    }
    for (let e = shape?.links ?? Math.floor(r() * n * 1.5); e > 0; e--) {
      const a = Math.floor(r() * n);
      const b = Math.floor(r() * n);
      if (a !== b) {
        adj[a]!.add(b);
        adj[b]!.add(a);
      }
    }
    const delays = new Map<string, number>();
    const delay = (a: number, b: number): number => {
      const key = `${a}:${b}`;
      if (!delays.has(key)) delays.set(key, r() < (shape?.slow ?? 0) ? 50 + r() * 200 : 1 + r() * 10);
      return delays.get(key)!;
    };
    // A peer list, as `of` tells `to`: every other peer of `of`.
    const listFor = (of: number, to: number): Set<string> =>
      new Set([...adj[of]!].filter((x) => x !== to).map((x) => ids[x]!));
    const got = new Array<boolean>(n).fill(false);
    const queue: { at: number; to: number; from: number | null }[] = [{ at: 0, to: 0, from: null }];
    let sends = 0;
    while (queue.length > 0) {
      queue.sort((a, b) => a.at - b.at);
      const { at, to: me, from } = queue.shift()!;
      if (got[me]) continue;
      got[me] = true;
      const message = {
        ...chat('m', null),
        peer: from === null ? null : { id: ids[from]!, host: '', neighbours: listFor(from, me) },
      };
      // As a node knows them: the lists of its own peers only.
      const view = {
        selfId: ids[me]!,
        neighboursOf: (id: string) =>
          adj[me]!.has(ids.indexOf(id)) ? listFor(ids.indexOf(id), me) : undefined,
      };
      for (const target of relayTargets(
        message,
        [...adj[me]!].map((x) => ids[x]!),
        withView ? view : undefined,
      )) {
        sends++;
        const t = ids.indexOf(target);
        queue.push({ at: at + delay(me, t), to: t, from: me });
      }
    }
    return { missed: got.filter((g) => !g).length, sends, nodes: n };
  }

  it('never misses a node when it skips only the deliverer’s own peers', () => {
    for (let seed = 1; seed <= 5_000; seed++) assert.equal(broadcast(seed, false).missed, 0, `seed ${seed}`);
  });

  it('with the smaller-id rule and links believed only when both ends list them, sends no more copies and misses nobody', (t) => {
    // 200,000 runs of this simulation: no broadcast missed a node; 1.74 sends per node with the rule,
    // 1.77 without (these graphs are sparse: the rule needs triangles; random20 sends 19 per message
    // for 20 nodes). Believing a deliverer's claimed links unconfirmed sent 1.45 per node but missed
    // a node in 27 of 200,000. 20,000 here, for time.
    const runs = 20_000;
    const total = { missed: 0, sends: 0, baseSends: 0, nodes: 0 };
    for (let seed = 1; seed <= runs; seed++) {
      const result = broadcast(seed, true);
      if (result.missed > 0) total.missed++;
      total.sends += result.sends;
      total.nodes += result.nodes;
      total.baseSends += broadcast(seed, false).sends;
    }
    t.diagnostic(
      `${runs} broadcasts, ${total.nodes} nodes: ${total.missed} missed a node; sends per node ` +
        `${(total.sends / total.nodes).toFixed(2)} with the rule, ${(total.baseSends / total.nodes).toFixed(2)} without`,
    );
    assert.equal(total.missed, 0, `${total.missed} of ${runs} broadcasts missed a node`);
    assert.ok(
      total.sends <= total.baseSends,
      `${total.sends} sends with the rule, ${total.baseSends} without`,
    );
  });

  it('in dense graphs with uneven delays the smaller-id rule can miss a node (a race the node repairs); the deliverer’s list alone never does', (t) => {
    // 20 nodes, ~10 links each, a fifth of the links slow. A node leaves a peer to a smaller-id
    // neighbour of the deliverer, counting on it having had the message from the same deliverer; it
    // may have had it first from another peer, which had left that node to it. 3,000 runs: 74 (2.5 %) missed
    // a node with the rule, at 1.4 sends per node; none without it, at 4.2 (3x). Gap repair and
    // anti-entropy (spec/node/anti-entropy.spec.ts) fill the hole.
    const shape: Shape = { nodes: 20, links: 200, slow: 0.2 };
    const runs = 3_000;
    const total = { missed: 0, baseMissed: 0, sends: 0, baseSends: 0 };
    for (let seed = 1; seed <= runs; seed++) {
      const withRule = broadcast(seed, true, shape);
      const without = broadcast(seed, false, shape);
      if (withRule.missed > 0) total.missed++;
      if (without.missed > 0) total.baseMissed++;
      total.sends += withRule.sends;
      total.baseSends += without.sends;
    }
    t.diagnostic(
      `${runs} broadcasts: ${total.missed} missed a node with the rule, ${total.baseMissed} without; ` +
        `sends per node ${(total.sends / runs / shape.nodes).toFixed(2)} with, ${(total.baseSends / runs / shape.nodes).toFixed(2)} without`,
    );
    assert.equal(total.baseMissed, 0, 'skipping only the deliverer’s own peers never misses');
    assert.ok(total.missed <= runs * 0.03, `${total.missed} of ${runs} missed: rare, as README says`);
    assert.ok(total.sends * 2 < total.baseSends, 'the rule is worth its repairs: less than half the sends');
  });
});
