import assert from 'node:assert/strict';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  createNetworkKeyFile,
  formatNetworkKey,
  generateNetworkKey,
  loadNetworkKey,
  NETWORK_KEY_HEADER,
  networkFingerprint,
  networkTag,
  parseNetworkKey,
} from '../../lib/security/network-key.js';
import { assertSecurityError, securityError, tempDir } from './helpers.js';

const posix = process.platform !== 'win32';

describe('network key', () => {
  it('creates a 32-byte random key file of mode 0600 with a header line, and loads it back', () => {
    const path = join(tempDir(), 'keys', 'network.key');
    const key = createNetworkKeyFile(path);
    assert.equal(key.length, 32);
    const text = readFileSync(path, 'utf8');
    assert.match(text, new RegExp(`^${NETWORK_KEY_HEADER}\\n[0-9a-f]{64}\\n$`));
    if (posix) assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.ok(loadNetworkKey(path).equals(key));
    assert.notDeepEqual(createNetworkKeyFile(join(tempDir(), 'other.key')), key);
  });

  it('never overwrites an existing key file', () => {
    const path = join(tempDir(), 'network.key');
    const key = createNetworkKeyFile(path);
    assert.throws(() => createNetworkKeyFile(path), securityError('ERR_NETWORK_KEY_FILE', /exists already/));
    assert.ok(loadNetworkKey(path).equals(key));
  });

  it('refuses a missing file and one that other users can read', () => {
    const dir = tempDir();
    assert.throws(
      () => loadNetworkKey(join(dir, 'none.key')),
      securityError('ERR_NETWORK_KEY_FILE', /does not exist/),
    );
    if (!posix) return;
    const path = join(dir, 'network.key');
    createNetworkKeyFile(path);
    chmodSync(path, 0o640);
    assert.throws(() => loadNetworkKey(path), securityError('ERR_NETWORK_KEY_FILE', /chmod 600/));
  });

  it('accepts comments, blank lines, CRLF and upper-case hex', () => {
    const key = generateNetworkKey();
    const text = `# our chat\r\n\r\n${NETWORK_KEY_HEADER}\r\n${key.toString('hex').toUpperCase()}\r\n# end\r\n`;
    assert.ok(parseNetworkKey(text).equals(key));
    const path = join(tempDir(), 'network.key');
    writeFileSync(path, text, { mode: 0o600 });
    assert.ok(loadNetworkKey(path).equals(key));
  });

  it('refuses a wrong header, a short or long key, non-hex digits and trailing lines', () => {
    const hex = generateNetworkKey().toString('hex');
    for (const text of [
      hex,
      `p2p-chat network key v2\n${hex}\n`,
      `${NETWORK_KEY_HEADER}\n${hex.slice(2)}\n`,
      `${NETWORK_KEY_HEADER}\n${hex}00\n`,
      `${NETWORK_KEY_HEADER}\n${hex.slice(1)}g\n`,
      `${NETWORK_KEY_HEADER}\n${hex}\n${hex}\n`,
      `${NETWORK_KEY_HEADER}\n`,
      '',
    ]) {
      assert.throws(() => parseNetworkKey(text), securityError('ERR_NETWORK_KEY_FILE'), JSON.stringify(text));
    }
  });

  it('round-trips format and parse for any key', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        assert.deepEqual([...parseNetworkKey(formatNetworkKey(bytes))], [...bytes]);
      }),
    );
  });

  it('gives a key or a SecurityError for any text, never another error', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.string({ maxLength: 200, unit: 'grapheme' }),
          // Near misses: the header, then hex-like text of about the right length.
          fc.stringMatching(/^[0-9a-fA-Fg \n#]{60,70}$/).map((tail) => `${NETWORK_KEY_HEADER}\n${tail}`),
        ),
        (text) => {
          try {
            assert.equal(parseNetworkKey(text).length, 32);
          } catch (err) {
            assertSecurityError(err);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rejects a key of the wrong size with a RangeError', () => {
    assert.throws(() => formatNetworkKey(Buffer.alloc(16)), RangeError);
    assert.throws(() => networkTag(Buffer.alloc(31)), RangeError);
  });

  it('derives a distinct 32-byte tag per key, and a public tag for no key', () => {
    const a = generateNetworkKey();
    const b = generateNetworkKey();
    assert.equal(networkTag(a).length, 32);
    assert.ok(networkTag(a).equals(networkTag(Buffer.from(a))));
    assert.ok(!networkTag(a).equals(networkTag(b)));
    assert.ok(!networkTag(a).equals(networkTag()));
    assert.ok(!networkTag(a).equals(a), 'the tag is not the key');
    assert.equal(networkFingerprint(), 'public');
    assert.match(networkFingerprint(a), /^[0-9a-f]{8}$/);
  });

  it('keeps the tags of every earlier version: nodes of different versions share a network', () => {
    // SHA-256 of the domain-separated inputs, as first released (computed with node:crypto).
    assert.equal(
      networkTag().toString('hex'),
      '08d753fca6a67a047c9b5c4b4838f9b079cc10519ed56743429364c763a638d5',
    );
    assert.equal(
      networkTag(Buffer.alloc(32, 7)).toString('hex'),
      'd66bd74b52cd276cdfaab731c07887073ae84e2b95ddd21dd6f2683b7177dfa2',
    );
    assert.equal(networkFingerprint(Buffer.alloc(32, 7)), 'd66bd74b');
  });
});
