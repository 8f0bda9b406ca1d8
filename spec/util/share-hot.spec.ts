import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  concat,
  defer,
  finalize,
  from,
  NEVER,
  of,
  retry,
  share,
  Subject,
  take,
  tap,
  type MonoTypeOperatorFunction,
  type Observer,
  type Subscription,
} from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { shareHot } from '../../lib/util/multicast.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

// shareHot is meant to behave as share(): each spec runs on both, so a marble that holds for one and
// not the other shows where they part.
const SHARES: [string, <T>() => MonoTypeOperatorFunction<T>][] = [
  ['shareHot()', shareHot],
  ['share()', share],
];

for (const [name, shared] of SHARES) {
  describe(name, () => {
    it('gives every value to every subscriber, in order, from one subscription to the source', () => {
      testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
        const source = hot('  -a-(bc)-d-|');
        const subs = '        ^---------!';
        const shared$ = source.pipe(shared());
        expectObservable(shared$).toBe('-a-(bc)-d-|');
        expectObservable(shared$).toBe('-a-(bc)-d-|');
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('gives each value to the subscribers in the order they subscribed', () => {
      const source = new Subject<number>();
      const shared$ = source.pipe(shared());
      const log: string[] = [];
      shared$.subscribe((v) => log.push(`first ${v}`));
      shared$.subscribe((v) => log.push(`second ${v}`));
      source.next(1);
      source.next(2);
      assert.deepEqual(log, ['first 1', 'second 1', 'first 2', 'second 2']);
    });

    it('gives a late subscriber only the values after it joined', () => {
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold(' -a-b-c-d-|');
        const subs = '        ^--------!';
        const shared$ = source.pipe(shared());
        expectObservable(shared$).toBe('-a-b-c-d-|');
        expectObservable(shared$, '----^').toBe('-----c-d-|');
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('leaves the source when the last subscriber leaves, not before', () => {
      testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
        const source = hot('  -a-b-c-d-e-|');
        const subs = '        -^----!';
        const shared$ = source.pipe(shared());
        expectObservable(shared$, '-^--!').toBe('-a-b');
        expectObservable(shared$, '--^---!').toBe('---b-c');
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('subscribes the source again for a subscriber that comes after the last one left', () => {
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold(' -a-b-c-|');
        const subs = ['^--!', '-----^------!'];
        const shared$ = source.pipe(shared());
        expectObservable(shared$, '^--!').toBe('-a-');
        expectObservable(shared$, '-----^').toBe('------a-b-c-|');
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('completes every subscriber with the source; a later subscriber subscribes it again', () => {
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold(' -a-b-|');
        const subs = ['^----!', '--------^----!'];
        const shared$ = source.pipe(shared());
        expectObservable(shared$).toBe('-a-b-|');
        expectObservable(shared$, '--^').toBe('---b-|');
        expectObservable(shared$, '--------^').toBe('---------a-b-|');
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('errors every subscriber with the source; a later subscriber subscribes it again', () => {
      const error = new Error('source failed');
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold(' -a-b-#', undefined, error);
        const subs = ['^----!', '--------^----!'];
        const shared$ = source.pipe(shared());
        expectObservable(shared$).toBe('-a-b-#', undefined, error);
        expectObservable(shared$, '--^').toBe('---b-#', undefined, error);
        expectObservable(shared$, '--------^').toBe('---------a-b-#', undefined, error);
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('subscribes the source again for a subscriber that resubscribes as it is told of the error (retry)', () => {
      const error = new Error('source failed');
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold(' -a-#', undefined, error);
        const subs = ['^--!', '---^--!', '------^--!'];
        expectObservable(source.pipe(shared(), retry(2))).toBe('-a--a--a-#', undefined, error);
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });

    it('gives all of a synchronous source to its first subscriber, and all of it again to the next', () => {
      let subscriptions = 0;
      const source = of(1, 2, 3).pipe(tap({ subscribe: () => subscriptions++ }));
      const shared$ = source.pipe(shared());
      testScheduler().run(({ expectObservable }) => {
        expectObservable(shared$).toBe('(abc|)', { a: 1, b: 2, c: 3 });
      });
      testScheduler().run(({ expectObservable }) => {
        expectObservable(shared$).toBe('(abc|)', { a: 1, b: 2, c: 3 });
      });
      assert.equal(subscriptions, 2);
    });

    it('leaves a source that goes on after a synchronous start once take(n) downstream is done', () => {
      const rest = new Subject<number>();
      const out: number[] = [];
      const subscription = concat(of(1), rest)
        .pipe(shared(), take(2))
        .subscribe((v) => out.push(v));
      assert.equal(rest.observed, true);
      rest.next(2);
      assert.deepEqual(out, [1, 2]);
      assert.ok(subscription.closed);
      assert.equal(rest.observed, false);
    });

    it('leaves a source that never ends when its only subscriber takes what it needs synchronously', () => {
      const rest = new Subject<number>();
      const out: number[] = [];
      concat(of(1, 2), rest, NEVER)
        .pipe(shared(), take(1))
        .subscribe((v) => out.push(v));
      assert.deepEqual(out, [1]);
      assert.equal(rest.observed, false);
    });

    it('tells its subscribers of the end before it tears the source down', () => {
      for (const end of ['error', 'complete'] as const) {
        const order: string[] = [];
        const source = new Subject<number>();
        const shared$ = source.pipe(
          finalize(() => order.push('source teardown')),
          shared(),
        );
        shared$.subscribe({ error: () => order.push('A told'), complete: () => order.push('A told') });
        if (end === 'error') source.error(new Error('boom'));
        else source.complete();
        assert.deepEqual(order, ['A told', 'source teardown'], end);
      }
    });

    it('stops a synchronous source when take(n) downstream has what it needs', () => {
      let pulled = 0;
      const out: number[] = [];
      from([1, 2, 3, 4, 5, 6])
        .pipe(
          tap(() => pulled++),
          shared(),
          take(2),
        )
        .subscribe((v) => out.push(v));
      assert.deepEqual(out, [1, 2]);
      assert.equal(pulled, 2, 'nothing pulled after the second value taken');
    });
  });
}

describe('shareHot() against share()', () => {
  /**
   * One step: a subscriber joins (ending after `take` values when above 0; `react` 1: it subscribes
   * another as it is told of every third value and of an error, 2: it unsubscribes a subscriber as
   * it is told of each value), a subscriber leaves, or the source emits, completes or errors.
   */
  type Step =
    | { readonly op: 'subscribe'; readonly take: number; readonly react: 0 | 1 | 2 }
    | { readonly op: 'unsubscribe'; readonly which: number }
    | { readonly op: 'next' | 'complete' | 'error' };

  const stepArb: fc.Arbitrary<Step> = fc.oneof(
    fc.record({
      op: fc.constant('subscribe' as const),
      take: fc.integer({ min: 0, max: 3 }),
      react: fc.constantFrom(0 as const, 1 as const, 2 as const),
    }),
    fc.record({ op: fc.constant('unsubscribe' as const), which: fc.nat(10) }),
    fc.constantFrom(
      { op: 'next' as const },
      { op: 'next' as const },
      { op: 'complete' as const },
      { op: 'error' as const },
    ),
  );

  /**
   * Runs `steps` over a source that gives two values synchronously as it is subscribed, then what
   * the steps send. Returns what each subscriber was told, and after each step how many times the
   * source was subscribed and how many of those subscriptions are open.
   */
  function run(
    steps: readonly Step[],
    shared: MonoTypeOperatorFunction<number>,
  ): { told: string[][]; source: string[] } {
    let live: Subject<number> | undefined;
    let subscribed = 0;
    let open = 0;
    const source = defer(() => {
      subscribed++;
      open++;
      live = new Subject<number>();
      return concat(of(-1, -2), live).pipe(finalize(() => open--));
    });
    const shared$ = source.pipe(shared);
    const told: string[][] = [];
    const subscriptions: Subscription[] = [];
    const join = (takes: number, react: 0 | 1 | 2): void => {
      const log: string[] = [];
      told.push(log);
      const observer: Observer<number> = {
        next: (v) => {
          log.push(String(v));
          if (react === 1 && v % 3 === 0) join(0, 0);
          if (react === 2) subscriptions[Math.abs(v) % subscriptions.length]?.unsubscribe();
        },
        error: (err: unknown) => {
          log.push(`error ${String(err)}`);
          if (react === 1) join(0, 0);
        },
        complete: () => log.push('complete'),
      };
      subscriptions.push((takes > 0 ? shared$.pipe(take(takes)) : shared$).subscribe(observer));
    };
    let value = 0;
    const counts: string[] = [];
    for (const step of steps) {
      if (step.op === 'subscribe') join(step.take, step.react);
      else if (step.op === 'unsubscribe')
        subscriptions[step.which % Math.max(1, subscriptions.length)]?.unsubscribe();
      else if (step.op === 'next') live?.next(value++);
      else if (step.op === 'complete') live?.complete();
      else live?.error('failed');
      counts.push(`${subscribed} subscribed, ${open} open`);
    }
    return { told, source: counts };
  }

  it('tells every subscriber the same, and subscribes and leaves the source at the same steps, as share()', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 40 }), (steps) => {
        assert.deepEqual(run(steps, shareHot()), run(steps, share()));
      }),
      { numRuns: 500 },
    );
  });
});
