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
