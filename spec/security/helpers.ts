import assert from 'node:assert/strict';
import { after } from 'node:test';
import { SecurityError, type SecurityErrorCode } from '../../lib/security/errors.js';
import { tempDir as sharedTempDir } from '../helpers/temp.js';

/** A fresh private temporary directory, removed after the test file. */
export function tempDir(): string {
  return sharedTempDir({ after }, 'security');
}

/** A validator for `assert.throws` that wants a SecurityError with `code`. */
export function securityError(code: SecurityErrorCode, message?: RegExp): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof SecurityError, `expected a SecurityError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  };
}

/** Fails unless `err` is a SecurityError (the only thing bad bytes from a peer may cause). */
export function assertSecurityError(err: unknown): asserts err is SecurityError {
  if (!(err instanceof SecurityError)) {
    throw new assert.AssertionError({ message: `expected a SecurityError, got ${String(err)}`, actual: err });
  }
}
