import { filter, tap, type MonoTypeOperatorFunction } from 'rxjs';
import type { RateLimiter } from '../transport/token-bucket.js';

/** Options of {@link rateLimit} and {@link spendRate}. */
export interface RateLimitOptions<T> {
  /** The buckets, one per key; shared by the two operators of a pipeline. */
  readonly limiter: RateLimiter;
  /** The key whose bucket a value draws on; `undefined` exempts the value (e.g. the node's own). */
  readonly key: (value: T) => string | undefined;
  /** Told of each value dropped because its key had no token left. */
  readonly onLimited?: (value: T) => void;
  /**
   * The value's time on its sender's clock (ms), e.g. a message's timestamp: the key's bucket then
   * refills by that clock where it runs ahead of ours (set to ours at the start of each burst, at
   * most 5 s ahead), so a sender that paces itself is not charged for how late the start of its burst
   * arrived (see `RateLimiter`). Default: our clock only.
   */
  readonly time?: (value: T) => number;
}

/**
 * Drops each value whose key has run out of tokens, before any costly stage; takes no token itself.
 * Pair it with {@link spendRate} placed after the stages that decide whether a value counts
 * (signature check, deduplication), so only values that were really new and valid are charged:
 * a forger cannot spend an honest sender's tokens, and each message is charged once however many
 * peers deliver a copy.
 *
 * Completes and errors with the source; a throwing `key` or `onLimited` becomes an error notification.
 */
export function rateLimit<T>(options: RateLimitOptions<T>): MonoTypeOperatorFunction<T> {
  return filter(rateLimitCheck(options));
}

/**
 * {@link rateLimit}'s test as a plain function (true: pass the value on), for a pipeline that runs
 * several stages in one step.
 */
export function rateLimitCheck<T>(options: RateLimitOptions<T>): (value: T) => boolean {
  const { limiter, key, onLimited, time } = options;
  return (value) => {
    const k = key(value);
    if (k === undefined || limiter.allows(k, time?.(value))) return true;
    onLimited?.(value);
    return false;
  };
}

/** Charges one token per value to its key (see {@link rateLimit}); passes every value on. */
export function spendRate<T>(
  options: Pick<RateLimitOptions<T>, 'limiter' | 'key' | 'time'>,
): MonoTypeOperatorFunction<T> {
  return tap(spendRateStep(options));
}

/** {@link spendRate}'s charge as a plain function, for a pipeline that runs several stages in one step. */
export function spendRateStep<T>(
  options: Pick<RateLimitOptions<T>, 'limiter' | 'key' | 'time'>,
): (value: T) => void {
  const { limiter, key, time } = options;
  return (value) => {
    const k = key(value);
    if (k !== undefined) limiter.spend(k, time?.(value));
  };
}
