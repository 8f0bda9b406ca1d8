import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { filter } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { rateLimit, spendRate } from '../../lib/operators/rate-limit.js';
import { RateLimiter } from '../../lib/transport/token-bucket.js';

const scheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

interface Msg {
  readonly from: string | undefined;
  readonly id: string;
}

const key = (m: Msg): string | undefined => m.from;

describe('rateLimit + spendRate', () => {
  it('passes a burst, drops what is over it, and passes again as the bucket refills', () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable, expectSubscriptions }) => {
      // 2 messages at once, then 1 per 100 ms of virtual time.
      const limiter = new RateLimiter({ perSecond: 10, burst: 2 }, { now: () => ts.now() });
      const v = { a: { from: 's', id: 'a' }, b: { from: 's', id: 'b' }, c: { from: 's', id: 'c' } };
      const source = cold('(abc) 95ms a 3ms b 99ms c|', v);
      const limited: string[] = [];
      const result = source.pipe(
        rateLimit({ limiter, key, onLimited: (m) => limited.push(m.id) }),
        spendRate({ limiter, key }),
      );
      expectObservable(result).toBe('(ab) 96ms a 103ms c|', v);
      expectSubscriptions(source.subscriptions).toBe('^ 204ms !');
      ts.flush();
      assert.deepEqual(limited, ['c', 'b']);
    });
  });

  it("with time, refills by the sender's clock: a paced sender whose first values came late passes", () => {
    const ts = scheduler();
    ts.run(({ cold, expectObservable }) => {
      // Stamped 0, 0, 100, 200 ms by the sender (10/s, a burst of 2), the first two late: all four
      // arrive within 20 ms of each other here.
      const v = {
        a: { from: 's', id: 'a', at: 0 },
        b: { from: 's', id: 'b', at: 0 },
        c: { from: 's', id: 'c', at: 100 },
        d: { from: 's', id: 'd', at: 200 },
      };
      const time = (m: Msg & { at: number }): number => m.at;
      const byTheirs = new RateLimiter({ perSecond: 10, burst: 2 }, { now: () => ts.now() });
      const byOurs = new RateLimiter({ perSecond: 10, burst: 2 }, { now: () => ts.now() });
      const source = cold('(ab) 9ms c 9ms d|', v);
      expectObservable(
        source.pipe(rateLimit({ limiter: byTheirs, key, time }), spendRate({ limiter: byTheirs, key, time })),
      ).toBe('(ab) 9ms c 9ms d|', v);
      expectObservable(
        source.pipe(rateLimit({ limiter: byOurs, key }), spendRate({ limiter: byOurs, key })),
      ).toBe('(ab) 20ms |', v);
    });
  });

  it('charges only what reaches spendRate: values dropped in between cost nothing', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const limiter = new RateLimiter({ perSecond: 1, burst: 1 }, { now: () => 0 });
      const forged = { from: 's', id: 'forged' };
      const real = { from: 's', id: 'real' };
      const source = cold('-f-f-f-r-r|', { f: forged, r: real });
      const result = source.pipe(
        rateLimit({ limiter, key }),
        filter((m) => m.id !== 'forged'), // stands for the signature check
        spendRate({ limiter, key }),
      );
      expectObservable(result).toBe('-------r--|', { r: real });
    });
  });

  it('keeps one budget per key, and exempts values whose key is undefined', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const limiter = new RateLimiter({ perSecond: 1, burst: 1 }, { now: () => 0 });
      const v = {
        a: { from: 'ann', id: '1' },
        b: { from: 'bob', id: '2' },
        A: { from: 'ann', id: '3' },
        o: { from: undefined, id: '4' },
      };
      const source = cold('-a-b-A-o-o|', v);
      const result = source.pipe(rateLimit({ limiter, key }), spendRate({ limiter, key }));
      expectObservable(result).toBe('-a-b---o-o|', v);
    });
  });

  it('passes errors and completion through', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const limiter = new RateLimiter({ perSecond: 1, burst: 5 });
      const source = cold('-a-#', { a: { from: 's', id: 'a' } });
      expectObservable(source.pipe(rateLimit({ limiter, key }), spendRate({ limiter, key }))).toBe('-a-#', {
        a: { from: 's', id: 'a' },
      });
    });
  });

  it('turns a throwing key into an error notification', () => {
    scheduler().run(({ cold, expectObservable }) => {
      const limiter = new RateLimiter({ perSecond: 1, burst: 5 });
      const boom = new TypeError('boom');
      const source = cold('-a-|', { a: { from: 's', id: 'a' } });
      const result = source.pipe(
        rateLimit<Msg>({
          limiter,
          key: () => {
            throw boom;
          },
        }),
      );
      expectObservable(result).toBe('-#', undefined, boom);
    });
  });
});
