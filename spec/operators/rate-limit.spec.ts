import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { filter, from, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { rateLimit, rateLimitCheck, spendRate, spendRateStep } from '../../lib/operators/rate-limit.js';
import { RateLimiter, type RateOptions } from '../../lib/transport/token-bucket.js';

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

describe('rateLimitCheck + spendRateStep', () => {
  /** A value as it arrives: its sender (undefined: exempt), our clock then, and its sender's stamp. */
  interface Arrival {
    readonly n: number;
    readonly from: string | undefined;
    readonly now: number;
    readonly ts: number;
    /** Dropped by a stage between the check and the charge (a bad signature, a copy). */
    readonly bad: boolean;
  }
  const arrivalKey = (m: Arrival): string | undefined => m.from;
  const arrivalTime = (m: Arrival): number => m.ts;
  const SENDERS = ['ann', 'bob'];

  /** Bursts and pauses of a few senders, stamped near our clock (late, on time, a little ahead). */
  const arrivalsArb = fc
    .array(
      fc.record({
        from: fc.constantFrom('ann', 'bob', undefined),
        wait: fc.constantFrom(0, 0, 0, 10, 50, 100, 400, 1_500),
        skew: fc.integer({ min: -3_000, max: 8_000 }),
        bad: fc.boolean(),
      }),
      { maxLength: 80 },
    )
    .map((steps) => {
      let now = 1_000_000;
      return steps.map(({ from, wait, skew, bad }, n): Arrival => {
        now += wait;
        return { n, from, now, ts: now + skew, bad };
      });
    });

  interface Outcome {
    readonly passed: number[];
    readonly limited: number[];
    /** Each sender's tokens at the end. */
    readonly tokens: number[];
  }

  function throughOperators(arrivals: readonly Arrival[], rate: RateOptions, stamped: boolean): Outcome {
    let clock = 0;
    const limiter = new RateLimiter(rate, { now: () => clock });
    const options = { limiter, key: arrivalKey, ...(stamped ? { time: arrivalTime } : {}) };
    const passed: number[] = [];
    const limited: number[] = [];
    from(arrivals)
      .pipe(
        tap((m) => (clock = m.now)),
        rateLimit({ ...options, onLimited: (m) => limited.push(m.n) }),
        filter((m) => !m.bad),
        spendRate(options),
      )
      .subscribe((m) => passed.push(m.n));
    return { passed, limited, tokens: SENDERS.map((k) => limiter.bucket(k).tokens) };
  }

  function throughFunctions(arrivals: readonly Arrival[], rate: RateOptions, stamped: boolean): Outcome {
    let clock = 0;
    const limiter = new RateLimiter(rate, { now: () => clock });
    const options = { limiter, key: arrivalKey, ...(stamped ? { time: arrivalTime } : {}) };
    const passed: number[] = [];
    const limited: number[] = [];
    const underRate = rateLimitCheck({ ...options, onLimited: (m) => limited.push(m.n) });
    const spend = spendRateStep(options);
    for (const m of arrivals) {
      clock = m.now;
      if (!underRate(m) || m.bad) continue;
      spend(m);
      passed.push(m.n);
    }
    return { passed, limited, tokens: SENDERS.map((k) => limiter.bucket(k).tokens) };
  }

  it('passes, reports and charges exactly as rateLimit and spendRate do, for any arrivals', () => {
    fc.assert(
      fc.property(
        arrivalsArb,
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 4 }),
        fc.boolean(),
        (arrivals, perSecond, burst, stamped) => {
          const rate = { perSecond, burst };
          assert.deepEqual(
            throughFunctions(arrivals, rate, stamped),
            throughOperators(arrivals, rate, stamped),
          );
        },
      ),
    );
  });

  it('tells onLimited of each value dropped, and of no other', () => {
    const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, { now: () => 0 });
    const limited: string[] = [];
    const underRate = rateLimitCheck<Msg>({ limiter, key, onLimited: (m) => limited.push(m.id) });
    const spend = spendRateStep<Msg>({ limiter, key });
    const answers = ['a', 'b', 'c', 'd'].map((id) => {
      const m = { from: 's', id };
      const ok = underRate(m);
      if (ok) spend(m);
      return ok;
    });
    assert.deepEqual(answers, [true, true, false, false]);
    assert.deepEqual(limited, ['c', 'd']);
  });

  it('takes no token itself: only spendRateStep charges', () => {
    const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, { now: () => 0 });
    const underRate = rateLimitCheck<Msg>({ limiter, key });
    const m = { from: 's', id: 'a' };
    assert.deepEqual([underRate(m), underRate(m), underRate(m)], [true, true, true]);
    assert.equal(limiter.bucket('s').tokens, 2);
  });

  it('charges one token per value, going into debt past the burst', () => {
    const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, { now: () => 0 });
    const spend = spendRateStep<Msg>({ limiter, key });
    for (let i = 0; i < 5; i++) spend({ from: 's', id: `${i}` });
    assert.equal(limiter.bucket('s').tokens, -3);
    assert.equal(limiter.bucket('t').tokens, 2, 'other keys untouched');
  });

  it('exempts a value whose key is undefined: passed and never charged, the limiter not even asked', () => {
    const asked: string[] = [];
    // A limiter that refuses everything and records what it is asked.
    const refusing = {
      allows: (k: string) => (asked.push(`allows ${k}`), false),
      spend: (k: string) => void asked.push(`spend ${k}`),
    } as unknown as RateLimiter;
    const limited: string[] = [];
    const underRate = rateLimitCheck<Msg>({ limiter: refusing, key, onLimited: (m) => limited.push(m.id) });
    const spend = spendRateStep<Msg>({ limiter: refusing, key });
    const own = { from: undefined, id: 'own' };
    assert.deepEqual([underRate(own), underRate(own), underRate(own)], [true, true, true]);
    spend(own);
    assert.deepEqual(asked, []);
    assert.deepEqual(limited, []);
    // The same limiter does refuse a value with a key: the exemption is the key's doing.
    assert.equal(underRate({ from: 's', id: 'a' }), false);
    assert.deepEqual(asked, ['allows s']);
    assert.deepEqual(limited, ['a']);
  });

  it('lets a throwing key escape to the caller (filterMap turns it into an error notification)', () => {
    const limiter = new RateLimiter({ perSecond: 1, burst: 1 });
    const boom = new TypeError('boom');
    const options = {
      limiter,
      key: (): string => {
        throw boom;
      },
    };
    assert.throws(() => rateLimitCheck<Msg>(options)({ from: 's', id: 'a' }), boom);
    assert.throws(() => spendRateStep<Msg>(options)({ from: 's', id: 'a' }), boom);
  });
});
