import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import { AddressError } from '../../lib/protocol/address.js';
import { isPeerError, ProtocolError } from '../../lib/protocol/errors.js';

/** A Node socket error as `net` raises it: an Error with a string `code`. */
function socketError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`read ${code}`), { code, errno: -104, syscall: 'read' });
}

describe('ProtocolError', () => {
  it('carries its stable code, its message and the name ProtocolError', () => {
    const err = new ProtocolError('ERR_FRAME_TOO_LARGE', 'frame of 9 bytes announced, the limit is 8');
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'ERR_FRAME_TOO_LARGE');
    assert.equal(err.message, 'frame of 9 bytes announced, the limit is 8');
    assert.equal(err.name, 'ProtocolError');
    assert.match(String(err), /^ProtocolError: frame of 9 bytes/);
  });
});

describe('isPeerError', () => {
  it('is true for a ProtocolError', () => {
    assert.equal(isPeerError(new ProtocolError('ERR_BAD_JSON', 'frame is not valid JSON')), true);
  });

  it('is true for socket errors that carry a string code', () => {
    for (const code of ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNREFUSED']) {
      assert.equal(isPeerError(socketError(code)), true, code);
    }
  });

  it('is false for TypeError and RangeError, even with a code: those are bugs of this node', () => {
    assert.equal(isPeerError(new TypeError('x is not a function')), false);
    assert.equal(isPeerError(new RangeError('bad limit')), false);
    assert.equal(
      isPeerError(Object.assign(new TypeError('bad arg'), { code: 'ERR_INVALID_ARG_TYPE' })),
      false,
    );
    assert.equal(
      isPeerError(Object.assign(new RangeError('out of range'), { code: 'ERR_OUT_OF_RANGE' })),
      false,
    );
  });

  it('is false for an Error without a string code', () => {
    assert.equal(isPeerError(new Error('boom')), false);
    assert.equal(isPeerError(Object.assign(new Error('numeric'), { code: 104 })), false);
    assert.equal(isPeerError(new AddressError('"x": expected host:port')), false);
  });

  it('is false for values that are not errors', () => {
    for (const value of [undefined, null, 'ECONNRESET', 42, { code: 'ECONNRESET' }]) {
      assert.equal(isPeerError(value), false, inspect(value));
    }
  });
});
