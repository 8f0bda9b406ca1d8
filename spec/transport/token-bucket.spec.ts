import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { CLOCK_LEAD_MS, RateLimiter, TokenBucket } from '../../lib/transport/token-bucket.js';

/** A clock the test moves by hand. */
function manualClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

describe('TokenBucket', () => {
  it('starts full, gives out its burst, then refills at its rate', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ perSecond: 10, burst: 3 }, clock.now);
    assert.deepEqual(
      [1, 2, 3, 4].map(() => bucket.tryTake()),
      [true, true, true, false],
    );
    assert.equal(bucket.msUntil(1), 100);
    clock.advance(99);
    assert.equal(bucket.tryTake(), false);
    clock.advance(1);
    assert.equal(bucket.tryTake(), true);
    clock.advance(10_000);
    assert.equal(bucket.tokens, 3, 'never above the burst');
  });

  it('lets spend overdraw, and the debt is paid back by the refill before tokens come again', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ perSecond: 100, burst: 5 }, clock.now);
    for (let i = 0; i < 15; i++) bucket.spend();
    assert.equal(bucket.tokens, -10);
    assert.equal(bucket.msUntil(1), 110);
    assert.equal(bucket.tryTake(), false);
    clock.advance(110);
    assert.equal(bucket.tryTake(), true);
  });

  it('spend returns the tokens left: below 0 in debt, refilled first by the time passed', () => {
    const clock = manualClock();
    const bucket = new TokenBucket({ perSecond: 10, burst: 3 }, clock.now);
    assert.deepEqual(
      [1, 2, 3, 4, 5].map(() => bucket.spend()),
      [2, 1, 0, -1, -2],
    );
    assert.equal(bucket.tokens, -2, 'what spend returned is the level');
    clock.advance(250); // 2.5 tokens refilled
    assert.equal(bucket.spend(), -0.5);
    assert.equal(bucket.spend(2), -2.5);
    clock.advance(10_000);
    assert.equal(bucket.spend(0), 3, 'refilled up to the burst, never above');
  });

  it('refuses a rate or burst that is not positive', () => {
    for (const rate of [
      { perSecond: 0, burst: 1 },
      { perSecond: 1, burst: -1 },
      { perSecond: Number.NaN, burst: 1 },
      { perSecond: 1, burst: Number.POSITIVE_INFINITY },
    ]) {
      assert.throws(() => new TokenBucket(rate), RangeError);
      assert.throws(() => new RateLimiter(rate), RangeError);
    }
  });

  it('never grants more than burst + rate x elapsed, whatever the pattern of takes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 100 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 500 }), fc.integer({ min: 1, max: 20 })), {
          maxLength: 200,
        }),
        (perSecond, burst, steps) => {
          const clock = manualClock();
          const bucket = new TokenBucket({ perSecond, burst }, clock.now);
          let granted = 0;
          let elapsed = 0;
          for (const [ms, takes] of steps) {
            clock.advance(ms);
            elapsed += ms;
            for (let i = 0; i < takes; i++) if (bucket.tryTake()) granted++;
            assert.ok(bucket.tokens >= 0 && bucket.tokens <= burst);
          }
          assert.ok(granted <= burst + (perSecond * elapsed) / 1000 + 1e-9, `${granted} granted`);
        },
      ),
    );
  });
});

describe('RateLimiter', () => {
  it('keeps one bucket per key', () => {
    const clock = manualClock();
    const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, { now: clock.now });
    assert.deepEqual(
      ['a', 'a', 'a', 'b', 'b', 'b'].map((k) => limiter.tryTake(k)),
      [true, true, false, true, true, false],
    );
    assert.equal(limiter.allows('a'), false);
    assert.equal(limiter.allows('c'), true, 'a new key starts full');
    clock.advance(1000);
    assert.equal(limiter.allows('a'), true);
  });

  it('remembers at most max keys, forgetting the least recently used', () => {
    const limiter = new RateLimiter({ perSecond: 1, burst: 1 }, { max: 2, now: () => 0 });
    limiter.spend('a');
    limiter.spend('b');
    assert.equal(limiter.allows('a'), false); // a is now the most recently used
    limiter.spend('c'); // evicts b
    assert.equal(limiter.allows('a'), false);
    assert.equal(limiter.allows('b'), true, 'a forgotten key starts full again');
  });

  it('allows() changes nothing: a value stamped ahead does not move the bucket, a key only asked about is not kept', () => {
    const clock = manualClock();
    const limiter = new RateLimiter({ perSecond: 1, burst: 2 }, { max: 2, now: clock.now });
    limiter.spend('s', clock.now());
    limiter.spend('s', clock.now()); // empty; the sender's clock is ours
    assert.equal(
      limiter.allows('s', clock.now() + 60_000),
      true,
      'stamped a minute ahead: up to 5 s refilled',
    );
    clock.advance(500);
    assert.equal(limiter.allows('s', clock.now()), false, 'half a token: the stamp ahead refilled nothing');
    clock.advance(500);
    assert.equal(limiter.allows('s', clock.now()), true);

    limiter.spend('t');
    for (let i = 0; i < 10; i++) assert.equal(limiter.allows(`forged ${i}`), true);
    limiter.spend('t');
    assert.equal(limiter.allows('t'), false, "t's bucket was kept: keys asked about took no place");
  });

  describe("with the sender's clock (values' timestamps)", () => {
    /** Spends one token for a value stamped `time` when allowed; returns whether it was. */
    const take = (limiter: RateLimiter, time: number): boolean => {
      if (!limiter.allows('s', time)) return false;
      limiter.spend('s', time);
      return true;
    };

    it('lets a sender that keeps to the rate by its own clock through, however late its first values came', () => {
      const clock = manualClock();
      const rate = { perSecond: 10, burst: 5 };
      const limiter = new RateLimiter(rate, { now: clock.now });
      const local = new RateLimiter(rate, { now: clock.now }); // our clock only, for comparison
      // The sender's burst of 5 at its time 0 arrives late (behind a backlog); then one value per
      // 100 ms of its clock, which arrive 10 ms apart as the backlog drains.
      const burst = [0, 0, 0, 0, 0].map((t) => take(limiter, t));
      for (let k = 0; k < 5; k++) local.spend('s');
      assert.deepEqual(burst, [true, true, true, true, true]);
      const paced: boolean[] = [];
      let byOurClock = 0;
      for (let k = 1; k <= 20; k++) {
        clock.advance(10);
        paced.push(take(limiter, k * 100));
        if (local.allows('s')) {
          local.spend('s');
          byOurClock++;
        }
      }
      assert.deepEqual(
        paced,
        Array.from({ length: 20 }, () => true),
      );
      assert.ok(byOurClock <= 2, `by our clock alone: 200 ms of refill, ${byOurClock} taken`);
    });

    it("sets the sender's clock again at the start of each burst (a full bucket), and only for a value that counted", () => {
      const clock = manualClock();
      const limiter = new RateLimiter({ perSecond: 10, burst: 5 }, { now: clock.now });
      const paste = (start: number): boolean[] => {
        const burst = [0, 0, 0, 0, 0].map(() => take(limiter, start));
        const paced: boolean[] = [];
        for (let k = 1; k <= 20; k++) {
          clock.advance(10);
          paced.push(take(limiter, start + k * 100));
        }
        return [...burst, ...paced];
      };
      const all = (n: number): boolean[] => Array.from({ length: n }, () => true);
      assert.equal(take(limiter, 0), true, 'a first message, on time');
      // A value in the sender's name that never counts (a forgery: checked, then dropped) sets nothing.
      assert.equal(limiter.allows('s', 10_000_000), true);
      clock.advance(10_000); // idle: the bucket is full again
      clock.advance(2_000); // the paste stamped 10 s later arrives 2 s late
      assert.deepEqual(paste(10_000), all(25));
    });

    it('never refills more than our clock, plus the lead, would: a sender cannot stamp its way past the rate', () => {
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.nat({ max: 300 }), fc.integer({ min: -60_000, max: 60_000 })), {
            minLength: 1,
            maxLength: 200,
          }),
          (steps) => {
            const clock = manualClock();
            const start = clock.now();
            const rate = { perSecond: 10, burst: 5 };
            const limiter = new RateLimiter(rate, { now: clock.now });
            let taken = 0;
            for (const [wait, stamp] of steps) {
              clock.advance(wait);
              if (take(limiter, clock.now() + stamp)) taken++;
            }
            const bound = rate.burst + ((clock.now() - start + CLOCK_LEAD_MS) / 1000) * rate.perSecond;
            assert.ok(taken <= Math.floor(bound) + 1, `${taken} taken, bound ${bound}`);
          },
        ),
      );
    });

    it('refills by our clock for values stamped long ago (history resent), and for a clock that went back', () => {
      const clock = manualClock();
      const limiter = new RateLimiter({ perSecond: 10, burst: 1 }, { now: clock.now });
      assert.equal(take(limiter, 5_000_000), true);
      assert.equal(take(limiter, 5_000_000), false, 'the bucket is empty');
      clock.advance(200);
      assert.equal(take(limiter, 1_000), true, 'an old stamp: our clock has refilled it');
      clock.advance(200);
      assert.equal(take(limiter, 5_000_000 - 3_600_000), true, 'a clock an hour back');
    });
  });
});
