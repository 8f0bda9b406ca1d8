import { Observable, type Observer, type OperatorFunction, type Subscriber, type Subscription } from 'rxjs';

/**
 * An operator whose subscriber to its source is one object, `make(out)`, given the downstream
 * subscriber `out`: an observer that is also a `Subscription`, which RxJS's `subscribe` uses as it is
 * (`isSubscriber`), so each value reaches its `next` with no wrapper in between (an operator built
 * with `map`/`filter` passes each value through several calls, mostly before V8 optimises them).
 *
 * The step is added to `out` before the source is subscribed: a downstream that unsubscribes during
 * a synchronous source (`take`) closes the step, and with it the source's subscription, which stops
 * pulling. The step must check its own `closed` before passing anything on.
 */
export function stepOperator<T, R>(
  make: (out: Subscriber<R>) => Subscription & Observer<T>,
): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) => {
      const step = make(subscriber);
      subscriber.add(step);
      return source.subscribe(step); // returns `step` itself
    });
}
