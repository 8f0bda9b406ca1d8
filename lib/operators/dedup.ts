import { defer, filter, type MonoTypeOperatorFunction } from 'rxjs';
import { boundedLru } from '../util/lru.js';

/** Options of {@link dedup}. Every default is sized for a chat network; see each field for why. */
export interface DedupOptions<T> {
  /** The id of a value; values with an id seen before are dropped. */
  readonly key: (value: T) => string;
  /**
   * The sender's timestamp of a value (ms since the epoch). When given, values older than
   * `maxAgeMs` or further than `maxSkewMs` in the future are dropped: the timestamp gate that keeps a
   * message whose id left the cache from looping again.
   */
  readonly time?: (value: T) => number;
  /** Most ids remembered. Default 100,000: a few MB, and many minutes of a busy chat. */
  readonly max?: number;
  /** Oldest timestamp accepted, relative to now. Default 10 minutes: tolerates slow links and clock drift. */
  readonly maxAgeMs?: number;
  /** Furthest future timestamp accepted. Default 2 minutes of clock skew between nodes. */
  readonly maxSkewMs?: number;
  /** Clock, ms since the epoch. Default `Date.now`; tests pass the scheduler's. */
  readonly now?: () => number;
}

export const DEDUP_DEFAULTS = { max: 100_000, maxAgeMs: 10 * 60_000, maxSkewMs: 2 * 60_000 } as const;

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1)
    throw new RangeError(`dedup: ${name} must be a positive integer, got ${value}`);
  return value;
}

/**
 * Passes each value whose key was not seen before, within a bounded memory.
 *
 * Ids are kept in an LRU (lru-cache) bounded by `max` entries and by age: an id is remembered for
 * `maxAgeMs + maxSkewMs` (and while it keeps arriving it stays the most recently used), and with a `time` function the timestamp gate drops what is older than
 * `maxAgeMs` (or further than `maxSkewMs` ahead), so every value the gate lets through is one whose
 * id is still in the cache if it was seen. Only ids are stored, never values.
 *
 * State is per subscription. Completes and errors with the source; a throwing `key` or `time`
 * becomes an error notification.
 * @throws {RangeError} at call time for a non-positive `max`, `maxAgeMs` or `maxSkewMs`.
 */
export function dedup<T>(options: DedupOptions<T>): MonoTypeOperatorFunction<T> {
  const isNew = dedupCheck(options);
  return (source) => defer(() => source.pipe(filter(isNew())));
}

/**
 * {@link dedup}'s test as plain functions, for a pipeline that runs several stages in one step
 * (each operator a value passes through is several calls, mostly before V8 optimises them): each
 * call of the returned function makes a fresh memory of ids (one per subscription) and returns the
 * test, true for a value to pass on. The same answers as {@link dedup} over the same values.
 * @throws {RangeError} at call time for a non-positive `max`, `maxAgeMs` or `maxSkewMs`.
 */
export function dedupCheck<T>(options: DedupOptions<T>): () => (value: T) => boolean {
  const max = positiveInteger('max', options.max ?? DEDUP_DEFAULTS.max);
  const maxAgeMs = positiveInteger('maxAgeMs', options.maxAgeMs ?? DEDUP_DEFAULTS.maxAgeMs);
  const maxSkewMs = positiveInteger('maxSkewMs', options.maxSkewMs ?? DEDUP_DEFAULTS.maxSkewMs);
  const now = options.now ?? Date.now;
  const { key, time } = options;
  const horizon = maxAgeMs + maxSkewMs;
  return () => {
    // id -> when it was first seen. get() refreshes recency, so an id whose copies keep arriving
    // is the last to be evicted. Age is checked on our own clock (not lru-cache's TTL) so an
    // injected clock, e.g. virtual time in tests, is honoured exactly.
    const seen = boundedLru<string, number>(max);
    return (value) => {
      const t = now();
      if (time !== undefined) {
        const ts = time(value);
        if (ts < t - maxAgeMs || ts > t + maxSkewMs) return false;
      }
      const id = key(value);
      const firstSeen = seen.get(id);
      if (firstSeen !== undefined && t - firstSeen <= horizon) return false;
      seen.set(id, t);
      return true;
    };
  };
}
