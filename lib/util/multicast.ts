import {
  Observable,
  Subscription,
  type MonoTypeOperatorFunction,
  type Observer,
  type SubjectLike,
  type Subscriber,
} from 'rxjs';

/**
 * A plain multicast subject for the message path: what `next` is given goes to every current
 * subscriber in order; `error` and `complete` end it, for current and later subscribers alike.
 *
 * RxJS's `Subject#next` wraps its work in a closure (`errorContext`) and walks its observers with
 * `for...of`, which allocates an iterator and a result object per observer in code V8 has not
 * optimised (most of a burst): a node passes each message through several ({@link shareHot}, a
 * link's outbox, its own messages), so ~450 bytes of garbage per message. This one keeps its subscribers in an array that
 * is replaced, never changed, on (un)subscribe, and walks it by index: a subscriber that leaves
 * during a `next` still sees that value only if it has not stopped, as with `Subject`.
 *
 * For {@link shareHot}, per-peer outboxes and a node's own messages. Unlike `Subject` it
 * does not throw on `next` after `unsubscribe` (it has none) and ignores notifications after it ended.
 */
export class Multicast<T> implements SubjectLike<T> {
  private subscribers: readonly Subscriber<T>[] = [];
  /** Once it ended: what ended it, given to each subscriber then and to every later one. */
  private ending: ((subscriber: Subscriber<T>) => void) | undefined;
  /** Subscribing goes through an Observable, which makes each observer a Subscriber with its teardown. */
  private readonly source = new Observable<T>((subscriber) => {
    if (this.ending !== undefined) {
      this.ending(subscriber);
      return undefined;
    }
    this.subscribers = [...this.subscribers, subscriber];
    return () => {
      this.subscribers = this.subscribers.filter((s) => s !== subscriber);
    };
  });

  subscribe(observer?: Partial<Observer<T>> | ((value: T) => void)): Subscription {
    return this.source.subscribe(observer);
  }

  /** The values from now on, as an Observable (to pipe). */
  asObservable(): Observable<T> {
    return this.source;
  }

  /** Subscribers now. */
  get observed(): boolean {
    return this.subscribers.length > 0;
  }

  next(value: T): void {
    if (this.ending !== undefined) return;
    const subscribers = this.subscribers;
    for (let i = 0; i < subscribers.length; i++) subscribers[i]!.next(value);
  }

  error(err: unknown): void {
    this.end((subscriber) => subscriber.error(err));
  }

  complete(): void {
    this.end((subscriber) => subscriber.complete());
  }

  private end(ending: (subscriber: Subscriber<T>) => void): void {
    if (this.ending !== undefined) return;
    this.ending = ending;
    const subscribers = this.subscribers;
    this.subscribers = [];
    for (let i = 0; i < subscribers.length; i++) ending(subscribers[i]!);
  }
}

/**
 * `share()` over a {@link Multicast}, without share's wrappers: the source feeds the Multicast
 * directly (share passes each value through a safe subscriber and an arrow function first, four
 * calls; on a node's message path every message goes through two of these, mostly before V8 has
 * optimised anything). Like `share()`: the source is subscribed with the first subscriber and
 * unsubscribed when the last one leaves; after it completes or errors (every subscriber then told),
 * the next subscriber subscribes it again.
 */
export function shareHot<T>(): MonoTypeOperatorFunction<T> {
  return (source) => {
    let hub: Multicast<T> | undefined;
    let feed: Subscription | undefined;
    let count = 0;
    /** Forgets the connection: the next subscriber makes a new one. */
    const detach = (): void => {
      feed = undefined;
      hub = undefined;
      count = 0;
    };
    /** The last subscriber left: forgets the connection and unsubscribes the source. */
    const reset = (): void => {
      const connection = feed;
      detach();
      connection?.unsubscribe();
    };
    return new Observable<T>((subscriber) => {
      const current = (hub ??= new Multicast<T>());
      count++;
      // The leaving first: a subscriber that leaves during the source's first, synchronous values
      // (take) stops the source there, as with share().
      subscriber.add(() => {
        if (hub === current && --count === 0) reset();
      });
      // A subscriber is used as it is: this returns it, with its removal from the hub added to it.
      subscriber.add(current.subscribe(subscriber));
      if (feed === undefined && !subscriber.closed) {
        // Set before subscribing: a source that ends at once resets it there. subscribe returns
        // `fed` itself (a subscriber is used as it is, no wrapper), which add ignores.
        const fed = new Feed(current, detach);
        feed = fed;
        fed.add(source.subscribe(fed));
      }
    });
  };
}

/**
 * What feeds a {@link shareHot}'s Multicast from its source. At the source's end, as with share():
 * the connection is forgotten first (a subscriber told of the end may subscribe again, to a new
 * one), then every subscriber is told, then the source's subscription is torn down.
 */
class Feed<T> extends Subscription implements Observer<T> {
  constructor(
    private readonly hub: Multicast<T>,
    private readonly ended: () => void,
  ) {
    super();
  }

  next(value: T): void {
    if (!this.closed) this.hub.next(value);
  }

  error(err: unknown): void {
    if (this.closed) return;
    this.ended();
    this.hub.error(err);
    this.unsubscribe();
  }

  complete(): void {
    if (this.closed) return;
    this.ended();
    this.hub.complete();
    this.unsubscribe();
  }
}
