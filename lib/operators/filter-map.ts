import { Subscription, type Observer, type OperatorFunction, type Subscriber } from 'rxjs';
import { stepOperator } from '../util/step.js';

/**
 * Maps each value with `project` and passes on what it returns, dropping `undefined`: `map` and
 * `filter` in one step. For a pipeline of stages written as plain functions (`rateLimitCheck`,
 * `signatureCheck`, `dedupCheck`, ...): each operator a value passes through is several calls, and
 * on a node's message path (every message, at every node) most run before V8 has optimised them.
 *
 * Completes and errors with the source; a throwing `project` becomes an error notification.
 */
export function filterMap<T, R>(project: (value: T) => R | undefined): OperatorFunction<T, R> {
  return stepOperator((out: Subscriber<R>) => new FilterMapping(project, out));
}

/** {@link filterMap}'s step ({@link stepOperator}): the source's subscriber itself. */
class FilterMapping<T, R> extends Subscription implements Observer<T> {
  constructor(
    private readonly project: (value: T) => R | undefined,
    private readonly out: Subscriber<R>,
  ) {
    super();
  }

  next(value: T): void {
    if (this.closed) return;
    let result: R | undefined;
    try {
      result = this.project(value);
    } catch (err) {
      this.out.error(err);
      return;
    }
    if (result !== undefined) this.out.next(result);
  }

  error(err: unknown): void {
    if (!this.closed) this.out.error(err);
  }

  complete(): void {
    if (!this.closed) this.out.complete();
  }
}
