import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { from, map, take, tap } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { decode, type Decoded } from '../../lib/operators/decode.js';
import { ProtocolError, type ProtocolErrorCode } from '../../lib/protocol/errors.js';
import {
  parseFrame,
  serializeFrame,
  type ChatFrame,
  type HelloFrame,
  type PeersFrame,
  type PingFrame,
} from '../../lib/protocol/frames.js';

const testScheduler = (): TestScheduler =>
  new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const chat: ChatFrame = {
  type: 'chat',
  id: 'm1',
  from: 'n1',
  nick: 'ann',
  ts: 1_700_000_000_000,
  seq: 1,
  text: 'hi',
  // Well-formed key and signature fields (decode checks their form; signatures are verified later).
  key: 'ab'.repeat(32),
  sig: 'A'.repeat(86),
};
const ping: PingFrame = { type: 'ping', n: 7 };
const hello: HelloFrame = { type: 'hello', v: 1, id: 'n2', nick: 'bob', port: 8002 };
const peers: PeersFrame = { type: 'peers', peers: [{ id: 'n3', addr: '10.0.0.3:8003' }] };

const bytes = {
  a: serializeFrame(chat),
  b: serializeFrame(ping),
  c: serializeFrame(hello),
  d: serializeFrame(peers),
  x: Buffer.from('{"type":"chat"', 'utf8'),
};
const decoded: Record<'a' | 'b' | 'c' | 'd', Decoded> = {
  a: { frame: chat, payload: bytes.a },
  b: { frame: ping, payload: bytes.b },
  c: { frame: hello, payload: bytes.c },
  d: { frame: peers, payload: bytes.d },
};

/** The error `parseFrame` throws for `payload`, checked to be a ProtocolError with `code`. */
function protocolErrorOf(payload: Buffer, code: ProtocolErrorCode): ProtocolError {
  try {
    parseFrame(payload);
  } catch (err) {
    assert.ok(err instanceof ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code);
    return err;
  }
  assert.fail(`parseFrame accepted ${payload.toString('utf8')}`);
}

describe('decode', () => {
  it('parses each payload into its frame and keeps the payload bytes', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-d-|', bytes);
      const subs = '        ^--------!';
      const expected = '    -a-b-c-d-|';
      expectObservable(source.pipe(decode())).toBe(expected, decoded);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('hands on the very Buffer it was given, not a copy', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-|', bytes);
      const subs = '        ^--!';
      const expected = '    -t-|';
      const sameBuffer$ = source.pipe(
        decode(),
        map(({ payload }) => payload === bytes.a),
      );
      expectObservable(sameBuffer$).toBe(expected, { t: true });
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('errors with ERR_BAD_JSON at a payload that is not JSON and leaves the source', () => {
    const error = protocolErrorOf(bytes.x, 'ERR_BAD_JSON');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-x-b-|', bytes);
      const subs = '        ^--!';
      const expected = '    -a-#';
      expectObservable(source.pipe(decode())).toBe(expected, decoded, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  for (const [code, text] of [
    ['ERR_BAD_JSON', ''],
    ['ERR_BAD_JSON', '\u00ff\u00fe not json'],
    ['ERR_BAD_FRAME', '[1,2,3]'],
    ['ERR_BAD_FRAME', '{"type":"chat","id":"m1"}'],
    ['ERR_BAD_FRAME', '{"type":"ping","n":-1}'],
    ['ERR_UNKNOWN_TYPE', '{"type":"gossip"}'],
    ['ERR_PROTOCOL_VERSION', '{"type":"hello","v":2,"id":"n2","nick":"bob","port":8002}'],
  ] as const) {
    it(`errors with ${code} at the payload ${JSON.stringify(text)}`, () => {
      const bad = Buffer.from(text, 'utf8');
      const error = protocolErrorOf(bad, code);
      testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
        const source = hot('  -b-x-a-|', { ...bytes, x: bad });
        const subs = '        ^--!';
        const expected = '    -b-#';
        expectObservable(source.pipe(decode())).toBe(expected, decoded, error);
        expectSubscriptions(source.subscriptions).toBe(subs);
      });
    });
  }

  it('completes when the source completes', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a--|', bytes);
      const subs = '        ^---!';
      const expected = '    -a--|';
      expectObservable(source.pipe(decode())).toBe(expected, decoded);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('completes at once on an empty source', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold<Buffer>('|');
      expectObservable(source.pipe(decode())).toBe('|');
      expectSubscriptions(source.subscriptions).toBe('(^!)');
    });
  });

  it('passes a source error through', () => {
    const error = new Error('ECONNRESET');
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-#', bytes, error);
      const subs = '        ^--!';
      const expected = '    -a-#';
      expectObservable(source.pipe(decode())).toBe(expected, decoded, error);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('leaves the source when unsubscribed early', () => {
    testScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
      const source = hot('  -a-b-c-|', bytes);
      const unsub = '       ----!';
      const subs = '        ^---!';
      const expected = '    -a-b';
      expectObservable(source.pipe(decode()), unsub).toBe(expected, decoded);
      expectSubscriptions(source.subscriptions).toBe(subs);
    });
  });

  it('decodes each subscription of the same pipeline on its own', () => {
    testScheduler().run(({ cold, expectObservable, expectSubscriptions }) => {
      const source = cold(' -a-b|', bytes);
      const decoded$ = source.pipe(decode());
      expectObservable(decoded$).toBe('-a-b|', decoded);
      expectObservable(decoded$, '---^').toBe('----a-b|', decoded);
      expectSubscriptions(source.subscriptions).toBe(['^---!', '---^---!']);
    });
  });

  it('stops a synchronous source when take(n) has what it needs', () => {
    let pulled = 0;
    testScheduler().run(({ expectObservable }) => {
      const source = from([bytes.a, bytes.b, bytes.x, bytes.c]).pipe(tap(() => (pulled += 1)));
      // The bad payload third in line is never read, so it cannot error the stream.
      expectObservable(source.pipe(decode(), take(2))).toBe('(ab|)', decoded);
    });
    assert.equal(pulled, 2);
  });
});
