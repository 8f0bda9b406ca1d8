import { LastKeyLru } from '../util/lru.js';

/** Shape of a {@link TokenBucket}: a sustained rate and the burst allowed on top of it. */
export interface RateOptions {
  /** Tokens added per second. */
  readonly perSecond: number;
  /** Most tokens held: what may be spent at once after a quiet spell. */
  readonly burst: number;
}

/**
 * Checks a rate's fields; `what` names it in the error.
 * @throws {RangeError} for a field that is not a positive finite number.
 */
export function checkRate(rate: RateOptions, what = 'rate'): void {
  for (const [name, value] of Object.entries(rate)) {
    if (!Number.isFinite(value) || value <= 0)
      throw new RangeError(`${what}: ${name} must be a positive number, got ${value}`);
  }
}

/**
 * A token bucket: starts full (`burst` tokens), refills at `perSecond`, never above `burst`.
 * `spend` may overdraw it (the debt is paid back by the refill), so work already done can be
 * charged after the fact; `tryTake` only takes what is there.
 * @throws {RangeError} at construction for a non-positive rate or burst.
 */
export class TokenBucket {
  private level: number;
  private at: number;

  constructor(
    private readonly rate: RateOptions,
    private readonly now: () => number = Date.now,
  ) {
    checkRate(rate);
    this.level = rate.burst;
    this.at = now();
  }

  /** Tokens available now (negative while in debt). */
  get tokens(): number {
    return this.tokensAt(this.now());
  }

  /**
   * Tokens available at clock reading `t` (ms): refilled up to `t`; a reading earlier than the last
   * one refills nothing.
   */
  tokensAt(t: number): number {
    if (t > this.at) {
      this.level = this.levelAt(t);
      this.at = t;
    }
    return this.level;
  }

  /** What {@link tokensAt} would give at `t`, without refilling. */
  levelAt(t: number): number {
    if (t <= this.at) return this.level;
    return Math.min(this.rate.burst, this.level + ((t - this.at) / 1000) * this.rate.perSecond);
  }

  /** Takes `n` tokens at clock reading `t`, going into debt if need be. */
  spendAt(t: number, n = 1): void {
    this.level = this.tokensAt(t) - n;
  }

  /** Takes `n` tokens when there are that many; false (and nothing taken) otherwise. */
  tryTake(n = 1): boolean {
    if (this.tokens < n) return false;
    this.level -= n;
    return true;
  }

  /** Takes `n` tokens, going into debt if need be; returns the tokens left (below 0: in debt). */
  spend(n = 1): number {
    this.spendAt(this.now(), n);
    return this.level;
  }

  /** Milliseconds until at least `n` tokens are there (0 when they are now). */
  msUntil(n = 1): number {
    const missing = n - this.tokens;
    return missing <= 0 ? 0 : Math.ceil((missing / this.rate.perSecond) * 1000);
  }
}

/** How far ahead of ours a sender's clock may run a bucket (ms): the lateness forgiven. */
export const CLOCK_LEAD_MS = 5_000;

/**
 * One {@link TokenBucket} per key (a peer, a sender, a remote host), the least recently used
 * forgotten beyond `max` keys so memory stays bounded whoever floods with new keys. A forgotten key
 * starts again with a full bucket: `max` is sized well above the keys that are active at once.
 */
export class RateLimiter<K extends string = string> {
  /** Per key: its bucket, and for a key with a sender's clock, ours minus the sender's at the start of its last burst. */
  private readonly keys: LastKeyLru<K, KeyState>;
  private readonly now: () => number;

  constructor(
    private readonly rate: RateOptions,
    options: { readonly max?: number; readonly now?: () => number } = {},
  ) {
    checkRate(rate);
    this.keys = new LastKeyLru(options.max ?? 4096);
    this.now = options.now ?? Date.now;
  }

  /**
   * The clock `state`'s bucket runs on for a value its sender stamped `time` (ms, the sender's
   * clock): ours, or the sender's where that is ahead, by at most {@link CLOCK_LEAD_MS}. The sender's
   * clock is set to ours at the first value of each of its bursts (a value that finds the bucket
   * full). A sender that paces itself by its own clock is then measured by that clock: how late the
   * start of its burst arrived (it may wait behind a whole batch, here and on the way) does not
   * count against it; values stamped long ago (resent history) refill by our clock as before. The
   * lead only moves refill earlier: a bucket's clock never goes back, so what a burst took ahead of
   * our clock is paid back before the bucket is full again, and no sender gets more than our clock's
   * rate. Only {@link spend} (a value that counted: checked and new) sets the sender's clock, so a
   * forged value in a sender's name cannot. Without `time`: our clock.
   * @returns the clock reading; {@link newOffset} is the offset (ours minus the sender's) it set
   *   the sender's clock to, if it did.
   */
  private clock(state: KeyState, time: number | undefined): number {
    const now = this.now();
    this.newOffset = undefined;
    if (time === undefined) return now;
    let offset = state.offset;
    if (offset === undefined || state.bucket.levelAt(now) >= this.rate.burst) {
      offset = now - time;
      this.newOffset = offset;
    }
    return Math.max(now, Math.min(now + CLOCK_LEAD_MS, time + offset));
  }

  /** Set by {@link clock} when it set a sender's clock (a number, not a tuple per value). */
  private newOffset: number | undefined;

  /** The state of `key`, created (a full bucket, no sender's clock) on first use. */
  private state(key: K): KeyState {
    let state = this.keys.get(key);
    if (state === undefined) {
      state = { bucket: new TokenBucket(this.rate, this.now), offset: undefined };
      this.keys.set(key, state);
    }
    return state;
  }

  /** The bucket of `key`, created full on first use. */
  bucket(key: K): TokenBucket {
    return this.state(key).bucket;
  }

  /**
   * True when `key` has a whole token now (with `time`, the value's time on its sender's clock: see
   * {@link clock}); changes nothing. It runs before a value is checked: a forged value stamped ahead
   * must not move its sender's bucket clock (refilling early, then nothing until ours catches up),
   * and a key only asked about gets no state to push the others out.
   */
  allows(key: K, time?: number): boolean {
    const state = this.keys.get(key);
    if (state === undefined) return this.rate.burst >= 1; // a key never charged has a full bucket
    return state.bucket.levelAt(this.clock(state, time)) >= 1;
  }

  /** Takes a token of `key` when there is one. */
  tryTake(key: K): boolean {
    return this.state(key).bucket.tryTake();
  }

  /** Takes a token of `key`, going into debt if need be (`time` as for {@link allows}). */
  spend(key: K, time?: number): void {
    const state = this.state(key);
    const t = this.clock(state, time);
    // Kept only where it was set: the start of a burst.
    if (this.newOffset !== undefined) state.offset = this.newOffset;
    state.bucket.spendAt(t);
  }
}

/**
 * What a {@link RateLimiter} keeps per key, in one cache entry (one lookup per value; the bucket and
 * the sender's clock of a key are forgotten together).
 */
interface KeyState {
  readonly bucket: TokenBucket;
  offset: number | undefined;
}
