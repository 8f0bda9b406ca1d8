import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { concat, from, NEVER, of, Subject, take, tap, throwError } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { filterMap } from '../../lib/operators/filter-map.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const n = { a: 1, b: 2, c: 3, d: 4, e: 5 };
/** Ten times each even number; the odd ones dropped. */
const evensTimesTen = (x: number): number | undefined => (x % 2 === 0 ? x * 10 : undefined);

describe('filterMap', () => {
  it('maps each value and drops those the project maps to undefined', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-e-|', n);
      const subs = '        ^----------!';
      const expected = '    ---x---y---|';
      expectObservable(source.pipe(filterMap(evensTimesTen))).toBe(expected, { x: 20, y: 40 });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes values on in the order they came, several in one frame included', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -(abc)-d-(ea)-|', n);
      const subs = '        ^-------------!';
      const expected = '    -(abc)-d-(ea)-|';
      expectObservable(source.pipe(filterMap((x: number) => x))).toBe(expected, n);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('calls the project once per value, with that value', () => {
    const seen: number[] = [];
    testScheduler().run(({ cold, expectObservable }) => {
      const source = cold('-a-b-c-|', n);
      const project = (x: number): number | undefined => (seen.push(x), evensTimesTen(x));
      expectObservable(source.pipe(filterMap(project))).toBe('---x---|', { x: 20 });
    });
    assert.deepEqual(seen, [1, 2, 3]);
  });

  it('passes on falsy values that are defined: only undefined is dropped', () => {
    const v = { z: 0, s: '', n: null, f: false, N: Number.NaN, u: undefined };
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -z-s-n-f-N-u-|', v);
      const subs = '        ^------------!';
      const expected = '    -z-s-n-f-N---|';
      expectObservable(source.pipe(filterMap((x: unknown) => x))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('completes when the source completes, also when every value was dropped', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-c-e-|', n);
      const subs = '        ^------!';
      const expected = '    -------|';
      expectObservable(source.pipe(filterMap(evensTimesTen))).toBe(expected);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes a source error through', () => {
    const error = new Error('source failed');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-#', n, error);
      const subs = '        ^----!';
      const expected = '    ---x-#';
      expectObservable(source.pipe(filterMap(evensTimesTen))).toBe(expected, { x: 20 }, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes on an error the source throws as it is subscribed', () => {
    const error = new Error('no source');
    testScheduler().run(({ expectObservable }) => {
      expectObservable(throwError(() => error).pipe(filterMap(evensTimesTen))).toBe('#', undefined, error);
    });
  });

  it('turns a throwing project into an error notification and leaves the source', () => {
    const error = new Error('bad value');
    const project = (x: number): number | undefined => {
      if (x === 3) throw error;
      return x;
    };
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-|', n);
      const subs = '        ^----!';
      const expected = '    -a-b-#';
      expectObservable(source.pipe(filterMap(project))).toBe(expected, n, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when unsubscribed early', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-|', n);
      const unsub = '       -----!';
      const subs = '        ^----!';
      const expected = '    ---x--';
      expectObservable(source.pipe(filterMap(evensTimesTen)), unsub).toBe(expected, { x: 20 });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when take(n) downstream has what it needs', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-e-|', n);
      const subs = '        ^------!';
      const expected = '    ---x---(y|)';
      expectObservable(source.pipe(filterMap(evensTimesTen), take(2))).toBe(expected, { x: 20, y: 40 });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('keeps each subscription of the same pipeline apart', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold(' -a-b-c-d-|', n);
      const mapped$ = source.pipe(filterMap(evensTimesTen));
      expectObservable(mapped$).toBe('---x---y-|', { x: 20, y: 40 });
      expectObservable(mapped$, '--^---!').toBe('-----x-', { x: 20 });
      expectSubscriptions(source.subscriptions).toBe(['^--------!', '--^---!']);
    });
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    const out: number[] = [];
    const subscription = from([1, 2, 3, 4, 5, 6])
      .pipe(
        tap(() => pulled++),
        filterMap(evensTimesTen),
        take(2),
      )
      .subscribe((x) => out.push(x));
    assert.deepEqual(out, [20, 40]);
    assert.equal(pulled, 4, 'values 1 to 4 pulled: nothing after the second value taken');
    assert.ok(subscription.closed);
  });

  it('stops a synchronous source with every value passed on at the first take(1)', () => {
    let pulled = 0;
    const out: number[] = [];
    from([1, 2, 3, 4])
      .pipe(
        tap(() => pulled++),
        filterMap((x: number) => x),
        take(1),
      )
      .subscribe((x) => out.push(x));
    assert.deepEqual(out, [1]);
    assert.equal(pulled, 1);
  });

  it('leaves a source that goes on after a synchronous part once take(n) is done', () => {
    // A synchronous first value, then a source that only unsubscription ends.
    const rest = new Subject<number>();
    const out: number[] = [];
    const subscription = concat(of(1), rest)
      .pipe(
        filterMap((x: number) => x),
        take(2),
      )
      .subscribe((x) => out.push(x));
    assert.deepEqual(out, [1]);
    assert.equal(rest.observed, true);
    rest.next(2);
    assert.deepEqual(out, [1, 2]);
    assert.ok(subscription.closed);
    assert.equal(rest.observed, false);
  });

  it('leaves the source when the subscriber unsubscribes, for a source that never ends', () => {
    const source = new Subject<number>();
    const out: number[] = [];
    const subscription = concat(source, NEVER)
      .pipe(filterMap(evensTimesTen))
      .subscribe((x) => out.push(x));
    source.next(1);
    source.next(2);
    assert.equal(source.observed, true);
    subscription.unsubscribe();
    assert.equal(source.observed, false);
    source.next(4);
    assert.deepEqual(out, [20]);
  });
});
