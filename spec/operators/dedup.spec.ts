import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { from, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { dedup, dedupCheck, type DedupOptions } from '../../lib/operators/dedup.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

interface Msg {
  readonly id: string;
  /** Sender's timestamp, in the scheduler's virtual milliseconds. */
  readonly ts: number;
}

const key = (m: Msg): string => m.id;
const time = (m: Msg): number => m.ts;

/** Messages with distinct ids (a, b, c, d, e) and `A`, a second copy of `a`. */
const v = {
  a: { id: 'm1', ts: 0 },
  b: { id: 'm2', ts: 0 },
  c: { id: 'm3', ts: 0 },
  d: { id: 'm4', ts: 0 },
  e: { id: 'm5', ts: 0 },
  A: { id: 'm1', ts: 0 },
} satisfies Record<string, Msg>;

/** Options each of which must be refused at call time. */
const BAD_OPTIONS = [
  ['max 0', { key, max: 0 }],
  ['max -1', { key, max: -1 }],
  ['max 1.5', { key, max: 1.5 }],
  ['max NaN', { key, max: Number.NaN }],
  ['maxAgeMs -1', { key, maxAgeMs: -1 }],
  ['maxAgeMs 0', { key, maxAgeMs: 0 }],
  ['maxSkewMs 0', { key, maxSkewMs: 0 }],
  ['maxSkewMs Infinity', { key, maxSkewMs: Number.POSITIVE_INFINITY }],
] as const satisfies readonly (readonly [string, DedupOptions<Msg>])[];

describe('dedup', () => {
  it('drops a message whose id was already seen', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-A-c-A-|', v);
      const subs = '        ^----------!';
      const expected = '    -a-b---c---|';
      expectObservable(source.pipe(dedup({ key }))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('forgets an id after maxAgeMs + maxSkewMs of virtual time', () => {
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      // Remembered for 10 + 5 = 15 ms: seen at 1, still known at 16 (age 15), forgotten at 17 (age 16);
      // let through at 17, it is remembered again from there, so the copy at 20 is dropped.
      const source = hot('  -a 14ms A A 2ms A |', v);
      const subs = '        ^ 20ms            !';
      const expected = '    -a 15ms   A 3ms   |';
      const options = { key, maxAgeMs: 10, maxSkewMs: 5, now: () => scheduler.now() };
      expectObservable(source.pipe(dedup(options))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('forgets an id first seen at virtual time 0', () => {
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  a 15ms A |', v);
      const subs = '        ^ 16ms   !';
      const expected = '    a 15ms A |';
      const options = { key, maxAgeMs: 10, maxSkewMs: 5, now: () => scheduler.now() };
      expectObservable(source.pipe(dedup(options))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('drops a message older than maxAgeMs or further ahead than maxSkewMs', () => {
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      // All arrive around virtual time 20; maxAgeMs 10, maxSkewMs 5.
      const gate = {
        a: { id: 'm1', ts: 10 }, // at 20: exactly maxAgeMs old, kept
        b: { id: 'm2', ts: 10 }, // at 21: 11 ms old, dropped
        c: { id: 'm3', ts: 27 }, // at 22: exactly maxSkewMs ahead, kept
        d: { id: 'm4', ts: 29 }, // at 23: 6 ms ahead, dropped
        e: { id: 'm5', ts: 24 }, // at 24: now, kept
      } satisfies Record<string, Msg>;
      const source = hot('  20ms abcde|', gate);
      const subs = '        ^ 24ms     !';
      const expected = '    20ms a-c-e|';
      const options = { key, time, maxAgeMs: 10, maxSkewMs: 5, now: () => scheduler.now() };
      expectObservable(source.pipe(dedup(options))).toBe(expected, gate);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('does not remember the id of a message the timestamp gate dropped', () => {
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      const gate = {
        x: { id: 'm1', ts: 1000 }, // far ahead: dropped, its id not stored
        y: { id: 'm1', ts: 3 }, // the same id with a sound timestamp: kept
      } satisfies Record<string, Msg>;
      const source = hot('  --x-y-|', gate);
      const subs = '        ^-----!';
      const expected = '    ----y-|';
      const options = { key, time, maxAgeMs: 10, maxSkewMs: 5, now: () => scheduler.now() };
      expectObservable(source.pipe(dedup(options))).toBe(expected, gate);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('forgets the oldest id once more than max ids are stored', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      // max 2: c pushes a out, so the copy of a passes; b is still known.
      const source = hot('  -a-b-c-A-|', v);
      const subs = '        ^--------!';
      const expected = '    -a-b-c-A-|';
      expectObservable(source.pipe(dedup({ key, max: 2 }))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('evicts the least recently used id, counting a dropped copy as a use', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      // max 2: a is seen again just before c arrives, so c pushes out b (least recently used), not a.
      const source = hot('  -a-b-A-c-A-b-|', v);
      const subs = '        ^------------!';
      const expected = '    -a-b---c---b-|';
      expectObservable(source.pipe(dedup({ key, max: 2 }))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('completes when the source completes', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-A-|', v);
      const subs = '        ^----!';
      const expected = '    -a---|';
      expectObservable(source.pipe(dedup({ key }))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes a source error through', () => {
    const error = new Error('source failed');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-A-#', v, error);
      const subs = '        ^----!';
      const expected = '    -a---#';
      expectObservable(source.pipe(dedup({ key }))).toBe(expected, v, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when unsubscribed early', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', v);
      const unsub = '       ----!';
      const subs = '        ^---!';
      const expected = '    -a-b';
      expectObservable(source.pipe(dedup({ key })), unsub).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('keeps a separate memory for each subscription of the same pipeline', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold(' -a-A-b|', v);
      const deduped$ = source.pipe(dedup({ key }));
      // The second subscription sees a first again: the first subscription's ids are not shared.
      expectObservable(deduped$).toBe('-a---b|', v);
      expectObservable(deduped$, '---^').toBe('----a---b|', v);
      expectSubscriptions(source.subscriptions).toBe(['^-----!', '---^-----!']);
    });
  });

  it('turns a throwing key function into an error notification', () => {
    const error = new Error('no id');
    const throwingKey = (m: Msg): string => {
      if (m.id === 'm2') throw error;
      return m.id;
    };
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', v);
      const subs = '        ^--!';
      const expected = '    -a-#';
      expectObservable(source.pipe(dedup({ key: throwingKey }))).toBe(expected, v, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('turns a throwing time function into an error notification', () => {
    const error = new Error('no timestamp');
    const throwingTime = (m: Msg): number => {
      if (m.id === 'm2') throw error;
      return m.ts;
    };
    const scheduler = testScheduler();
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', v);
      const subs = '        ^--!';
      const expected = '    -a-#';
      const options = { key, time: throwingTime, now: () => scheduler.now() };
      expectObservable(source.pipe(dedup(options))).toBe(expected, v, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    testScheduler().run(({ expectObservable }) => {
      const source = from([v.a, v.A, v.b, v.c, v.d]).pipe(tap(() => (pulled += 1)));
      expectObservable(source.pipe(dedup({ key }), take(2))).toBe('(ab|)', v);
    });
    assert.equal(pulled, 3); // a, its copy, b: nothing after the second value taken
  });

  for (const [name, options] of BAD_OPTIONS) {
    it(`throws a RangeError at call time for ${name}`, () => {
      assert.throws(() => dedup(options), RangeError);
    });
  }
});

/** A message as it arrives: its id and timestamp, and our clock's reading then. */
interface Arrival extends Msg {
  readonly now: number;
}

/**
 * What dedup is meant to pass, written plainly: ids in recency order (least recent first), each with
 * when it was let through; a use (a copy dropped, or an id stored) makes an id the most recent.
 */
function modelDedup(
  arrivals: readonly Arrival[],
  max: number,
  maxAgeMs: number,
  maxSkewMs: number,
): Arrival[] {
  const seen: { id: string; at: number }[] = [];
  return arrivals.filter(({ id, ts, now }) => {
    if (ts < now - maxAgeMs || ts > now + maxSkewMs) return false;
    const i = seen.findIndex((entry) => entry.id === id);
    const known = i >= 0 ? seen.splice(i, 1)[0] : undefined;
    if (known !== undefined && now - known.at <= maxAgeMs + maxSkewMs) {
      seen.push(known);
      return false;
    }
    seen.push({ id, at: now });
    if (seen.length > max) seen.shift();
    return true;
  });
}

describe('dedupCheck', () => {
  /**
   * Few ids; a clock that mostly moves on a few ms per arrival (and sometimes back), and timestamps
   * near it: copies, eviction, forgetting and the timestamp gate all occur.
   */
  const arrivalsArb = fc
    .array(
      fc.record({
        id: fc.constantFrom('m1', 'm2', 'm3', 'm4', 'm5'),
        step: fc.integer({ min: -2, max: 6 }),
        skew: fc.integer({ min: -12, max: 12 }),
      }),
      { maxLength: 60 },
    )
    .map((steps) => {
      let now = 0;
      return steps.map(({ id, step, skew }): Arrival => {
        now += step;
        return { id, ts: now + skew, now };
      });
    });

  it('passes exactly the values dedup passes, for any arrivals (and both what a plain model of it passes)', () => {
    fc.assert(
      fc.property(
        arrivalsArb,
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 10 }),
        fc.integer({ min: 1, max: 10 }),
        (arrivals, max, maxAgeMs, maxSkewMs) => {
          let clock = 0;
          const options = { key, time, max, maxAgeMs, maxSkewMs, now: () => clock };

          const isNew = dedupCheck<Arrival>(options)();
          const checked = arrivals.filter((a) => {
            clock = a.now;
            return isNew(a);
          });

          const passed: Arrival[] = [];
          from(arrivals)
            .pipe(
              tap((a) => (clock = a.now)),
              dedup<Arrival>(options),
            )
            .subscribe((a) => passed.push(a));

          assert.deepEqual(checked, passed);
          assert.deepEqual(checked, modelDedup(arrivals, max, maxAgeMs, maxSkewMs));
        },
      ),
    );
  });

  it('gives each call of the factory a memory of its own', () => {
    const fresh = dedupCheck({ key });
    const first = fresh();
    const second = fresh();
    assert.deepEqual([first(v.a), first(v.A), first(v.b)], [true, false, true]);
    // The second test has seen nothing yet: a and b are new to it.
    assert.deepEqual([second(v.A), second(v.b), second(v.a), second(v.c)], [true, true, false, true]);
    // ...and what the second saw (c) is still new to the first.
    assert.deepEqual([first(v.c), first(v.a)], [true, false]);
  });

  for (const [name, options] of BAD_OPTIONS) {
    it(`throws a RangeError at call time for ${name}, before any test is made`, () => {
      assert.throws(() => dedupCheck(options), RangeError);
    });
  }
});
