import { LRUCache } from 'lru-cache';

const ONE = (): number => 1;

/**
 * An LRU of at most `max` entries whose memory grows with what it holds.
 *
 * lru-cache given `max` allocates its index arrays for `max` entries up front (a 100,000-id dedup
 * cache: ~2.5 MB before the first message, in every idle node). Bounding it by `maxSize` with every
 * entry of size 1 keeps the same bound and eviction order while the arrays grow as entries arrive.
 * @throws {TypeError} for a `max` that is not a positive integer (from lru-cache).
 */
export function boundedLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(
  max: number,
): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: max, sizeCalculation: ONE });
}

/**
 * A {@link boundedLru} that answers a `get` of the key it saw last (by `get` or `set`) without
 * asking the cache again: in a burst one sender's key comes many times in a row, and each
 * lru-cache call runs its option handling, mostly before V8 has optimised it. The same answers
 * and the same eviction order as the cache alone: the cache changes for that key only through a
 * `set` (which moves the memo to its key) or through an eviction (caused by a `set` of another
 * key, which moves it too), and that key is already the most recently used.
 */
export class LastKeyLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>> {
  private readonly cache: LRUCache<K, V>;
  /** Undefined until the first get or set (keys are never undefined). */
  private lastKey: K | undefined;
  private lastValue: V | undefined;

  constructor(max: number) {
    this.cache = boundedLru<K, V>(max);
  }

  get(key: K): V | undefined {
    if (key === this.lastKey) return this.lastValue;
    const value = this.cache.get(key);
    this.lastKey = key;
    this.lastValue = value;
    return value;
  }

  set(key: K, value: V): void {
    this.cache.set(key, value);
    this.lastKey = key;
    this.lastValue = value;
  }

  /** Keys, most recently used first (as lru-cache's `keys()`). */
  keys(): IterableIterator<K> {
    return this.cache.keys();
  }

  get size(): number {
    return this.cache.size;
  }
}
