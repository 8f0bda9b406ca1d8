/** Options of {@link backoffDelay}. */
export interface BackoffOptions {
  /** First delay. Default 250 ms: a node started a moment later is found quickly. */
  readonly baseMs?: number;
  /** Largest delay. Default 30 s: a node that is down costs one dial per half minute. */
  readonly maxMs?: number;
}

export const BACKOFF_DEFAULTS = { baseMs: 250, maxMs: 30_000 } as const;

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential, capped, with "equal
 * jitter" (uniform in [d/2, d]) so nodes started together do not dial in lockstep.
 * @param random a uniform number in [0, 1); injectable for tests.
 */
export function backoffDelay(
  attempt: number,
  options: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  const base = options.baseMs ?? BACKOFF_DEFAULTS.baseMs;
  const max = options.maxMs ?? BACKOFF_DEFAULTS.maxMs;
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
