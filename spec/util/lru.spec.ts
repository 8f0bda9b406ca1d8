import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { boundedLru, LastKeyLru } from '../../lib/util/lru.js';

describe('boundedLru', () => {
  it('holds at most max entries and evicts the least recently used, like a reference model', () => {
    // Commands: set key k, or get key k (which refreshes it). The model is an array in recency order.
    const command = fc.record({ get: fc.boolean(), key: fc.integer({ min: 0, max: 12 }) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(command, { maxLength: 200 }), (max, commands) => {
        const lru = boundedLru<number, number>(max);
        let model: number[] = []; // least recently used first
        for (const [i, { get, key }] of commands.entries()) {
          if (get) {
            const held = model.includes(key);
            assert.equal(lru.get(key) !== undefined, held);
            if (held) model = [...model.filter((k) => k !== key), key];
          } else {
            lru.set(key, i);
            model = [...model.filter((k) => k !== key), key];
            if (model.length > max) model = model.slice(model.length - max);
          }
          assert.equal(lru.size, model.length);
          assert.ok(lru.size <= max);
        }
        assert.deepEqual([...lru.keys()].reverse(), model);
      }),
    );
  });

  it('allocates nothing for its bound up front: an empty cache of 100,000 is small', () => {
    const before = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const caches = Array.from({ length: 20 }, () => boundedLru<string, number>(100_000));
    const after = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    assert.equal(caches.length, 20);
    // A preallocating cache of 100,000 takes ~2.5 MB (index arrays), 20 of them ~50 MB.
    assert.ok(after - before < 5_000_000, `20 empty caches took ${after - before} bytes`);
  });

  it('refuses a bound that is not a positive integer', () => {
    assert.throws(() => boundedLru(0), TypeError);
  });
});

describe('LastKeyLru', () => {
  it('answers every get and evicts in the same order as the cache alone (property)', () => {
    const command = fc.record({ get: fc.boolean(), key: fc.integer({ min: 0, max: 6 }) });
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5 }), fc.array(command, { maxLength: 200 }), (max, commands) => {
        const plain = boundedLru<number, number>(max);
        const memo = new LastKeyLru<number, number>(max);
        for (const [i, { get, key }] of commands.entries()) {
          if (get) assert.equal(memo.get(key), plain.get(key), `get ${key} at ${i}`);
          else {
            memo.set(key, i);
            plain.set(key, i);
          }
          assert.equal(memo.size, plain.size);
          assert.deepEqual([...memo.keys()], [...plain.keys()], `order after command ${i}`);
        }
      }),
    );
  });
});
