import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BACKOFF_DEFAULTS, backoffDelay } from '../../lib/transport/backoff.js';

/** The delay before jitter: exponential from baseMs, capped at maxMs. */
const ceiling = (attempt: number, baseMs: number, maxMs: number): number =>
  Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));

const lowest = (): number => 0;
const highest = (): number => 1 - Number.EPSILON;

describe('backoffDelay', () => {
  it('doubles with each attempt', () => {
    const options = { baseMs: 100, maxMs: 1_000_000 };
    const low = [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelay(attempt, options, lowest));
    const high = [0, 1, 2, 3, 4, 5].map((attempt) => backoffDelay(attempt, options, highest));
    assert.deepEqual(low, [50, 100, 200, 400, 800, 1600]);
    assert.deepEqual(high, [100, 200, 400, 800, 1600, 3200]);
  });

  it('stops growing at maxMs', () => {
    const options = { baseMs: 20, maxMs: 200 };
    assert.deepEqual(
      [3, 4, 5, 10, 31, 1000, Number.MAX_SAFE_INTEGER].map((attempt) =>
        backoffDelay(attempt, options, highest),
      ),
      [160, 200, 200, 200, 200, 200, 200],
    );
    assert.equal(backoffDelay(1000, options, lowest), 100);
  });

  it('uses the documented defaults when no options are given', () => {
    assert.equal(backoffDelay(0, {}, highest), BACKOFF_DEFAULTS.baseMs);
    assert.equal(backoffDelay(100, undefined, highest), BACKOFF_DEFAULTS.maxMs);
    const delay = backoffDelay(0);
    assert.ok(delay >= BACKOFF_DEFAULTS.baseMs / 2 && delay <= BACKOFF_DEFAULTS.baseMs, `got ${delay}`);
  });

  it('keeps the jitter within [d/2, d] of the un-jittered delay d', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 200 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, baseMs, maxMs, r) => {
          const d = ceiling(attempt, baseMs, maxMs);
          const delay = backoffDelay(attempt, { baseMs, maxMs }, () => r);
          assert.ok(Number.isInteger(delay), `${delay} is not whole milliseconds`);
          assert.ok(delay >= d / 2 && delay <= d, `${delay} outside [${d / 2}, ${d}]`);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never shrinks from one attempt to the next for the same random draw', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 100 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
        (attempt, baseMs, maxMs, r) => {
          const options = { baseMs, maxMs };
          assert.ok(backoffDelay(attempt + 1, options, () => r) >= backoffDelay(attempt, options, () => r));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('spreads delays drawn with Math.random over the jitter range', () => {
    const options = { baseMs: 1000, maxMs: 1000 };
    const delays = Array.from({ length: 200 }, () => backoffDelay(5, options));
    assert.ok(
      delays.every((d) => d >= 500 && d <= 1000),
      'every delay within [d/2, d]',
    );
    assert.ok(new Set(delays).size > 20, 'nodes started together do not dial in lockstep');
  });
});
