import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { v8FlagsFor } from '../../lib/cli/v8-flags.js';

/** The flag names this process's V8 has, from `node --v8-options`. */
function knownFlags(): Set<string> {
  const text = execFileSync(process.execPath, ['--v8-options'], {
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  return new Set([...text.matchAll(/^\s+--([a-z0-9-]+) \(/gm)].map((m) => m[1]!));
}

/** A flag's name as `--v8-options` lists it: `--no-maglev` turns off the flag `maglev`. */
const nameOf = (flag: string): string => flag.replace(/^--(no-)?/, '').replace(/=.*/, '');

describe('bin/p2p: V8 flags', () => {
  // That bin/p2p starts with nothing on stderr (no such line) is checked by args.spec's --version test.
  it("sets only flags the running V8 has (setFlagsFromString prints 'unrecognized flag' for any other)", () => {
    const known = knownFlags();
    assert.ok(known.size > 100, `read ${known.size} flags from --v8-options`);
    const flags = v8FlagsFor(process.versions.v8);
    assert.ok(flags.length > 0);
    for (const flag of flags)
      assert.ok(known.has(nameOf(flag)), `${flag} is a flag of V8 ${process.versions.v8}`);
  });

  it("delays TurboFan by Node 20's interrupt budget, and by Node 22's and 24's invocation counts, without Maglev", () => {
    // The V8 versions of Node 20.20, 22.23 and 24.21.
    assert.deepEqual(v8FlagsFor('11.3.244.8-node.38').map(nameOf), [
      'interrupt-budget',
      'max-bytecode-size-for-early-opt',
      'gc-memory-reducer-start-delay-ms',
    ]);
    for (const v8 of ['12.4.254.21-node.57', '13.6.233.17-node.53']) {
      assert.ok(v8FlagsFor(v8).includes('--no-maglev'), `V8 ${v8}: Maglev off`);
      assert.deepEqual(v8FlagsFor(v8).map(nameOf), [
        'invocation-count-for-turbofan',
        'invocation-count-for-early-optimization',
        'maglev',
        'gc-memory-reducer-start-delay-ms',
      ]);
    }
  });
});
