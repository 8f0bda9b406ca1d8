import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { procsFor, type Proc, type ReadyEvent } from '../helpers/procs.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Node's own modules that `bin/p2p` must not load (entries of process.moduleLoadList containing
 * these, or equal to those below): each costs an idle node memory for nothing it needs (README, Performance: idle memory).
 * node:crypto and OpenSSL's Ed25519 keys ~0.7-1.5 MB (libsodium does the same; any of its internal
 * modules or its binding counts), `import ... from 'node:process'` ~0.5 MB (it reads every property
 * of process, loading process.report's module), perf_hooks ~0.2 MB (lru-cache reads the global
 * `performance` at load), node:tty ~0.15 MB where no standard stream is a terminal, readline for
 * piped input.
 */
const NOT_LOADED = ['crypto', 'internal/process/report', 'perf_hooks'];
/** ... and these exactly (Node itself loads internal/readline/* and internal/tty for its own use). */
const NOT_LOADED_EXACTLY = ['NativeModule tty', 'NativeModule readline'];

/**
 * A preload that writes the modules Node loaded (process.moduleLoadList) to $P2P_SPEC_MODULES as the
 * process ends (in process.reallyExit: after every 'exit' listener). Through NODE_OPTIONS: bin/p2p
 * runs as a program, by its #! line.
 */
const RECORDER = [
  "import { writeFileSync } from 'node:fs';",
  'const reallyExit = process.reallyExit;',
  'process.reallyExit = (code) => {',
  "  writeFileSync(process.env.P2P_SPEC_MODULES, process.moduleLoadList.join('\\n'));",
  '  reallyExit.call(process, code);',
  '};',
].join('\n');

describe('bin/p2p: what it loads', () => {
  it('loads neither node:crypto, nor perf_hooks, nor node:tty (piped), nor readline: two starts with a data directory, a chat, a clean exit', async (t) => {
    const procs = procsFor(t);
    const dir = tempDir(t, 'footprint');
    const start = async (run: string, peers: string[]): Promise<Proc & { ready: ReadyEvent }> => {
      const name = run.replace(/\d$/, '');
      const args = ['0', ...peers, '--json', '--host', '127.0.0.1', '--nick', name];
      const proc = procs.spawn([...args, '--data-dir', join(dir, name)], {
        env: {
          NODE_OPTIONS: `--import=data:text/javascript,${encodeURIComponent(RECORDER)}`,
          P2P_SPEC_MODULES: join(dir, `${run}.txt`),
        },
      });
      await proc.waitForEvent((e) => e.event === 'ready', undefined, 'ready');
      return proc as Proc & { ready: ReadyEvent };
    };
    const ids = new Set<string>();
    // The first start creates each node's identity file and history; the second reads them.
    for (const round of ['1', '2']) {
      const ann = await start(`ann${round}`, []);
      const bob = await start(`bob${round}`, [`127.0.0.1:${ann.ready.port}`]);
      ids.add(ann.ready.id).add(bob.ready.id);
      await ann.waitForPeerUp(bob.ready.id);
      bob.send(`hello ${round}`);
      await ann.waitForMessage(`hello ${round}`);
      ann.send(`hi ${round}`);
      await bob.waitForMessage(`hi ${round}`);
      for (const [run, proc] of [
        [`ann${round}`, ann],
        [`bob${round}`, bob],
      ] as const) {
        assert.deepEqual(await proc.stop(), { code: 0, signal: null }, `${run} exits cleanly`);
        const loaded = readFileSync(join(dir, `${run}.txt`), 'utf8').split('\n');
        assert.ok(loaded.includes('NativeModule net'), `${run}: the list was recorded`);
        assert.deepEqual(
          loaded.filter(
            (entry) =>
              NOT_LOADED.some((module) => entry.includes(module)) || NOT_LOADED_EXACTLY.includes(entry),
          ),
          [],
          `${run} loaded none of them`,
        );
      }
    }
    assert.equal(ids.size, 2, 'the second start of each node has the identity of its first');
  });
});
