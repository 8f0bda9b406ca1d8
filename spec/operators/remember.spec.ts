import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { from, Subject, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { remember } from '../../lib/operators/remember.js';
import type { Inbound } from '../../lib/operators/types.js';
import { serializeFrame, type ChatFrame } from '../../lib/protocol/frames.js';
import { MessageStore, type HistoryWindow } from '../../lib/store/message-store.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const PEER = { id: 'peer', host: '127.0.0.1' };
/** Well-formed signing fields; remember does not check signatures (the verify operator does). */
const SIGNED = { key: 'ab'.repeat(32), sig: 'A'.repeat(86) };

/** An inbound chat message of `from` with sequence number `seq`, sent at virtual time `ts`. */
function inbound(from: string, seq: number, ts = 0): Inbound<ChatFrame> {
  const frame = {
    type: 'chat',
    id: `${from}-${seq}`,
    from,
    nick: from,
    ts,
    seq,
    text: `#${seq}`,
    ...SIGNED,
  } as ChatFrame;
  return { peer: PEER, frame, payload: serializeFrame(frame) };
}

/** An in-memory store on the clock `now` (the scheduler's, in the marble specs). */
const memoryStore = (window: HistoryWindow = {}, now: () => number = () => 0): MessageStore =>
  MessageStore.open('self', undefined, window, now).store;

/** a1 a2 a3 b1 of two senders, and `A`, a second copy of a1 (another relay path). */
const v = {
  a: inbound('a', 1),
  b: inbound('a', 2),
  c: inbound('a', 3),
  d: inbound('b', 1),
  A: inbound('a', 1),
};

describe('remember', () => {
  it('passes each new message and keeps it in the store', () => {
    const store = memoryStore();
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-|', v);
      const subs = '        ^--------!';
      const expected = '    -a-b-c-d-|';
      expectObservable(source.pipe(remember(store))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
    assert.deepEqual(
      store.recent(10).map((m) => m.frame.id),
      ['a-1', 'a-2', 'a-3', 'b-1'],
    );
  });

  it('drops a message the store already holds', () => {
    const store = memoryStore();
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-A-b-A-|', v);
      const subs = '        ^--------!';
      const expected = '    -a---b---|';
      expectObservable(source.pipe(remember(store))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('drops a message older than what it evicted of that sender, though no longer held', () => {
    // Window of 2: a2 and a3 push a1 out; a1 arriving again (its id long gone from any LRU) is old.
    const store = memoryStore({ maxMessages: 2 });
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-A-d-|', v);
      const subs = '        ^----------!';
      const expected = '    -a-b-c---d-|';
      expectObservable(source.pipe(remember(store))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('drops a message older than the history window (virtual clock)', () => {
    const scheduler = testScheduler();
    const store = memoryStore({ maxAgeMs: 10 }, () => scheduler.now());
    const aged = {
      x: inbound('a', 1, 0), // at 5: 5 ms old, kept
      y: inbound('a', 2, 0), // at 11: 11 ms old, dropped
      z: inbound('a', 3, 10), // at 20: exactly 10 ms old, kept
    };
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  5ms x 5ms y 8ms z |', aged);
      const subs = '        ^ 20ms            !';
      const expected = '    5ms x 14ms      z |';
      expectObservable(source.pipe(remember(store))).toBe(expected, aged);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('completes when the source completes', () => {
    const store = memoryStore();
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-A-|', v);
      const subs = '        ^----!';
      const expected = '    -a---|';
      expectObservable(source.pipe(remember(store))).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('passes a source error through', () => {
    const error = new Error('source failed');
    const store = memoryStore();
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-A-#', v, error);
      const subs = '        ^----!';
      const expected = '    -a---#';
      expectObservable(source.pipe(remember(store))).toBe(expected, v, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when unsubscribed early, and stores nothing after', () => {
    const store = memoryStore();
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', v);
      const unsub = '       ----!';
      const subs = '        ^---!';
      const expected = '    -a-b';
      expectObservable(source.pipe(remember(store)), unsub).toBe(expected, v);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
    assert.equal(store.size, 2);
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    const store = memoryStore();
    testScheduler().run(({ expectObservable }) => {
      const source = from([v.a, v.A, v.b, v.c, v.d]).pipe(tap(() => (pulled += 1)));
      expectObservable(source.pipe(remember(store), take(2))).toBe('(ab|)', v);
    });
    assert.equal(pulled, 3); // a, its copy, b: nothing after the second value taken
    assert.deepEqual(
      store.recent(10).map((m) => m.frame.id),
      ['a-1', 'a-2'],
      'nothing past the last value taken is stored',
    );
  });

  it('shares the store between subscriptions, by design: it is the node memory', () => {
    const store = memoryStore();
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold(' -a-b|', v);
      const remembered$ = source.pipe(remember(store));
      // The second subscription sees a and b again; the first one stored them, so they are known.
      expectObservable(remembered$).toBe('-a-b|', v);
      expectObservable(remembered$, '--^').toBe('------|', v);
      expectSubscriptions(source.subscriptions).toBe(['^---!', '--^---!']);
    });
  });

  it('turns a failing store (a throwing clock) into an error notification', () => {
    const error = new Error('clock failed');
    const scheduler = testScheduler();
    const store = memoryStore({}, () => {
      if (scheduler.now() >= 3) throw error; // fine for a at 1, broken by the time b arrives
      return 0;
    });
    scheduler.run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', v);
      const subs = '        ^--!';
      const expected = '    -a-#';
      expectObservable(source.pipe(remember(store))).toBe(expected, v, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('with a log on disk, completes after the last written message when the source completes during delivery', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'p2p-remember-'));
    const store = MessageStore.open('self', dir, {}, () => 0).store;
    t.after(() => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const seen: string[] = [];
    const input = new Subject<Inbound<ChatFrame>>();
    const subscription = input.pipe(remember(store)).subscribe({
      next: (m) => {
        seen.push(m.frame.id);
        if (m.frame.id === 'a-1') input.complete(); // from downstream, while a-2 waits its turn
      },
      complete: () => seen.push('complete'),
    });
    t.after(() => subscription.unsubscribe());
    input.next(v.a);
    input.next(v.b);
    store.flush(); // both written in one write: both passed on, then the completion
    assert.deepEqual(seen, ['a-1', 'a-2', 'complete']);
  });

  it('with a log on disk, passes each message on only once its record is written, in order', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'p2p-remember-'));
    const store = MessageStore.open('self', dir, {}, () => 0).store;
    t.after(() => {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const log = (): string => readFileSync(join(dir, 'messages.log')).toString('latin1');
    const passed: { id: string; onDisk: boolean }[] = [];
    const input = new Subject<Inbound<ChatFrame>>();
    const subscription = input
      .pipe(remember(store))
      .subscribe((m) => passed.push({ id: m.frame.id, onDisk: log().includes(`"id":"${m.frame.id}"`) }));
    t.after(() => subscription.unsubscribe());
    input.next(v.a);
    input.next(v.A); // its copy: dropped
    input.next(v.b);
    assert.equal(passed.length, 0, 'nothing passed on within the turn, before the write');
    await Promise.resolve(); // the end of the turn: one write, then the messages
    assert.deepEqual(passed, [
      { id: 'a-1', onDisk: true },
      { id: 'a-2', onDisk: true },
    ]);
    input.next(v.c);
    store.flush(); // written and passed on at once
    assert.deepEqual(passed.at(-1), { id: 'a-3', onDisk: true });
  });
});
