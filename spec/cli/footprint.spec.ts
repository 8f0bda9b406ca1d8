import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { procsFor, type Proc, type ReadyEvent } from '../helpers/procs.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Node's own modules that `bin/p2p` must not load: each costs an idle node memory for nothing it
 * needs (README, Performance: idle memory). node:crypto and OpenSSL's Ed25519 keys ~1.5 MB (libsodium
 * does the same), `import ... from 'node:process'` ~0.5 MB (it reads every property of process,
 * loading process.report's module), perf_hooks ~0.2 MB (lru-cache reads the global `performance` at
 * load), node:tty ~0.15 MB when no standard stream is a terminal, readline for piped input.
 */
const NOT_LOADED = [
  'NativeModule crypto',
  'NativeModule internal/process/report',
  'NativeModule perf_hooks',
  'NativeModule tty',
  'NativeModule readline',
];

/**
 * A preload that writes the modules Node loaded (process.moduleLoadList) to $P2P_SPEC_MODULES at exit.
 * Through NODE_OPTIONS: bin/p2p runs as a program, by its #! line.
 */
const RECORDER =
  "import { writeFileSync } from 'node:fs'; process.on('exit', () => writeFileSync(process.env.P2P_SPEC_MODULES, process.moduleLoadList.join('\\n')));";

describe('bin/p2p: what it loads', () => {
  it('loads neither node:crypto, nor perf_hooks, nor node:tty (piped), nor readline, through a chat and a clean exit', async (t) => {
    const procs = procsFor(t);
    const dir = tempDir(t, 'footprint');
    const start = async (name: string, peers: string[]): Promise<Proc & { ready: ReadyEvent }> => {
      const proc = procs.spawn(['0', ...peers, '--json', '--host', '127.0.0.1', '--nick', name], {
        env: {
          NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(RECORDER)}`,
          P2P_SPEC_MODULES: join(dir, `${name}.txt`),
        },
      });
      await proc.waitForEvent((e) => e.event === 'ready', undefined, 'ready');
      return proc as Proc & { ready: ReadyEvent };
    };
    const ann = await start('ann', []);
    const bob = await start('bob', [`127.0.0.1:${ann.ready.port}`]);
    await ann.waitForPeerUp(bob.ready.id);
    bob.send('hello');
    await ann.waitForMessage('hello');
    ann.send('hi');
    await bob.waitForMessage('hi');
    for (const [name, proc] of [
      ['ann', ann],
      ['bob', bob],
    ] as const) {
      assert.deepEqual(await proc.stop(), { code: 0, signal: null }, `${name} exits cleanly`);
      const loaded = readFileSync(join(dir, `${name}.txt`), 'utf8').split('\n');
      assert.ok(loaded.includes('NativeModule net'), `${name}: the list was recorded`);
      assert.deepEqual(
        NOT_LOADED.filter((module) => loaded.includes(module)),
        [],
        `${name} loaded none of them`,
      );
    }
  });
});
