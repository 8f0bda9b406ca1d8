import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { map, share, Subject, take, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { Multicast } from '../../lib/util/multicast.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const CONNECTORS: [string, (source: Observable<string>) => Observable<string>][] = [
  ['share() over a Multicast', (source) => source.pipe(share({ connector: () => new Multicast<string>() }))],
  ['share() over a Subject', (source) => source.pipe(share())],
];

describe('Multicast', () => {
  // The marbles hold for share() over rxjs's Subject too: the same behaviour.
  for (const [name, shared$] of CONNECTORS) {
    it(`${name}: one subscription to the source, every subscriber sees what comes after it joined`, () => {
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-b-c-d-|');
        const shared = shared$(source);
        expectObservable(shared).toBe('-a-b-c-d-|');
        expectObservable(shared, '----^').toBe('-----c-d-|');
        expectObservable(shared, '^--!').toBe('-a-');
        expectSubscriptions(source.subscriptions).toBe('^--------!');
      });
    });

    it(`${name}: an error reaches every subscriber; a later subscriber starts the source again`, () => {
      testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
        const source = cold('-a-#');
        const shared = shared$(source);
        expectObservable(shared).toBe('-a-#');
        expectObservable(shared, '-^').toBe('-a-#');
        expectObservable(shared, '-----^').toBe('------a-#');
        expectSubscriptions(source.subscriptions).toBe(['^--!', '-----^--!']);
      });
    });

    it(`${name}: unsubscribed from the source when the last subscriber leaves`, () => {
      testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
        const source = hot('-a-b-c-d-');
        const shared = shared$(source);
        expectObservable(shared, '^-!').toBe('-a-');
        expectObservable(shared, '^---!').toBe('-a-b-');
        expectSubscriptions(source.subscriptions).toBe('^---!');
      });
    });
  }

  it('gives each value to the subscribers in the order they came, like a Subject', () => {
    const seen = (subject: Subject<number> | Multicast<number>): string[] => {
      const log: string[] = [];
      subject.subscribe({ next: (v) => log.push(`one ${v}`) });
      subject.next(1);
      subject.subscribe({ next: (v) => log.push(`two ${v}`), complete: () => log.push('two done') });
      subject.next(2);
      subject.complete();
      subject.next(3);
      subject.subscribe({ complete: () => log.push('late done') });
      return log;
    };
    assert.deepEqual(seen(new Multicast<number>()), seen(new Subject<number>()));
    assert.deepEqual(seen(new Multicast<number>()), ['one 1', 'one 2', 'two 2', 'two done', 'late done']);
  });

  it('tells a subscriber that comes after an error the same error', () => {
    const subject = new Multicast<number>();
    const boom = new Error('boom');
    subject.error(boom);
    subject.error(new Error('second'));
    let got: unknown;
    subject.subscribe({ error: (err: unknown) => (got = err) });
    assert.equal(got, boom);
  });

  it('lets a subscriber leave, or another join, during a next without changing who gets that value', () => {
    const subject = new Multicast<number>();
    const log: string[] = [];
    const first = subject
      .asObservable()
      .pipe(take(2))
      .subscribe((v) => log.push(`first ${v}`));
    subject.subscribe((v) => {
      log.push(`second ${v}`);
      if (v === 1)
        subject
          .asObservable()
          .pipe(map((w) => `third ${w}`))
          .subscribe((line) => log.push(line));
    });
    subject.next(1);
    subject.next(2);
    subject.next(3);
    assert.ok(first.closed);
    assert.deepEqual(log, ['first 1', 'second 1', 'first 2', 'second 2', 'third 2', 'second 3', 'third 3']);
  });

  it('stops giving values to a subscriber that unsubscribed', () => {
    const subject = new Multicast<string>();
    const log: string[] = [];
    const subscription = subject.subscribe((v) => log.push(v));
    subject.next('a');
    subscription.unsubscribe();
    subject.next('b');
    assert.deepEqual(log, ['a']);
    assert.equal(subject.observed, false);
  });
});
