import { Subscription, type MonoTypeOperatorFunction, type Observer, type Subscriber } from 'rxjs';
import type { ChatFrame } from '../protocol/frames.js';
import type { MessageStore } from '../store/message-store.js';
import type { Inbound } from './types.js';
import { stepOperator } from '../util/step.js';

/**
 * Keeps each new message in the node's history and passes it on once its record is written; drops a
 * message the store already holds, or one older than what it holds of that sender (the per-sender
 * high-water mark that complements `dedup`'s LRU: an old message whose id left the cache is still
 * recognised), or one older than the history window.
 *
 * With a log on disk, the messages of one turn of the event loop are written together at its end
 * (or at `store.flush()`), and passed on then, in order: nothing downstream (display, relay) sees a
 * message before it would survive `kill -9`. Without a directory it passes them on at once.
 *
 * The store is the state, shared by design across subscriptions: it is the node's memory.
 * Completes with the source once its messages are passed on; errors with it at once. A store that
 * throws (a bug, a failing clock) errors the stream.
 */
export function remember(store: MessageStore): MonoTypeOperatorFunction<Inbound<ChatFrame>> {
  return stepOperator((out: Subscriber<Inbound<ChatFrame>>) => new Remembering(store, out));
}

/**
 * The operator's subscriber to its source. One object, not filter + mergeMap: no inner subscription
 * per message on the hot path. The store runs its afterWrite callbacks in order, so the messages keep
 * their order. A step of {@link stepOperator}: the source's subscriber itself.
 */
class Remembering extends Subscription implements Observer<Inbound<ChatFrame>> {
  /**
   * Added and waiting for their write, in order. One `afterWrite` per batch of them (what one write
   * covers), not a callback per message: this runs for every message at every node. So a batch is
   * passed on together: another `afterWrite` callback registered between two of its messages (the
   * node's resync pump) runs after both, all of them written by then.
   */
  private queue: Inbound<ChatFrame>[] = [];
  private armed = false;
  /** Taken out of the queue by a release that is still passing them on. */
  private releasing = 0;
  private sourceDone = false;

  constructor(
    private readonly store: MessageStore,
    private readonly out: Subscriber<Inbound<ChatFrame>>,
  ) {
    super();
  }

  next(message: Inbound<ChatFrame>): void {
    if (this.closed) return;
    let added: boolean;
    try {
      added = this.store.add(message.frame, message.payload, message.unverified !== true);
    } catch (err) {
      this.out.error(err);
      return;
    }
    if (!added) return;
    this.queue.push(message);
    if (!this.armed) {
      this.armed = true;
      // Runs once every record added so far is written: those of the queued messages, and of any
      // added to the queue before then.
      this.store.afterWrite(this.release);
    }
  }

  error(err: unknown): void {
    if (!this.closed) this.out.error(err);
  }

  complete(): void {
    if (this.closed) return;
    this.sourceDone = true;
    if (this.idle()) this.out.complete();
  }

  /** Nothing waits for its write or to be passed on. */
  private idle(): boolean {
    return !this.armed && this.queue.length === 0 && this.releasing === 0;
  }

  /**
   * Passes on the queued messages, written now. One added meanwhile waits for its own write; a
   * source that completes meanwhile (from downstream) is passed on after the last of them.
   */
  private readonly release = (): void => {
    this.armed = false;
    const written = this.queue;
    this.queue = [];
    this.releasing += written.length;
    for (let i = 0; i < written.length; i++) {
      if (this.closed) return;
      this.releasing--;
      this.out.next(written[i]!);
    }
    if (this.sourceDone && this.idle()) this.out.complete();
  };
}
