import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { sumAllocations, type HeapProfile } from '../../bench/allocations.js';
import { tempDir } from '../helpers/temp.js';

const PRELOAD = fileURLToPath(new URL('../../bench/heap-sampling.mjs', import.meta.url));

describe('bench/allocations', () => {
  it("samples a real process's allocations, freed ones included, and names the function that made them", (t) => {
    const dir = tempDir(t, 'alloc');
    const script = join(dir, 'work.mjs');
    // ~16 MB in arrays that die at once: only a profile that keeps freed objects sees them.
    writeFileSync(
      script,
      'function churn() { let n = 0; for (let i = 0; i < 2000; i++) n += new Array(1000).fill(i).length; return n; }\nchurn();\n',
    );
    execFileSync(process.execPath, ['--import', PRELOAD, script], {
      env: { PATH: process.env['PATH'] ?? '', P2P_HEAP_SAMPLING_DIR: dir },
      timeout: 30_000,
    });
    const files = readdirSync(dir).filter((f) => f.endsWith('.heapprofile'));
    assert.equal(files.length, 1, 'one profile, written at exit');
    const sums = sumAllocations(JSON.parse(readFileSync(join(dir, files[0]!), 'utf8')) as HeapProfile);
    const churn = sums.functions.find(([name]) => name.startsWith('churn work.mjs:1'));
    assert.ok(
      churn !== undefined,
      `churn among ${sums.functions
        .slice(0, 5)
        .map(([n]) => n)
        .join(', ')}`,
    );
    // 2,000 arrays of 1,000 elements: 8 MB of elements at the least (sampled, so an estimate).
    assert.ok(churn[1] > 6e6, `churn allocated ${churn[1]} bytes`);
  });

  it(
    'writes the profile on SIGTERM and still ends a process that has no SIGTERM handler of its own',
    { timeout: 30_000 },
    async (t) => {
      const dir = tempDir(t, 'alloc');
      const script = join(dir, 'idle.mjs');
      writeFileSync(script, "process.stdout.write('up\\n'); setTimeout(() => {}, 20_000);\n");
      const child = spawn(process.execPath, ['--import', PRELOAD, script], {
        env: { PATH: process.env['PATH'] ?? '', P2P_HEAP_SAMPLING_DIR: dir },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      t.after(() => child.kill('SIGKILL'));
      await once(child.stdout, 'data');
      child.kill('SIGTERM');
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      assert.deepEqual({ code, signal }, { code: null, signal: 'SIGTERM' });
      assert.ok(existsSync(join(dir, `${child.pid}.heapprofile`)));
    },
  );

  it("sums bytes per function over the call tree, most first, without the sampler's own", () => {
    const frame = (functionName: string, url: string, lineNumber: number) => ({
      functionName,
      url,
      lineNumber,
    });
    const profile: HeapProfile = {
      head: {
        callFrame: frame('(root)', '', -1),
        selfSize: 0,
        children: [
          {
            callFrame: frame('a', 'file:///repo/dist/p2p.mjs', 9),
            selfSize: 100,
            children: [{ callFrame: frame('', '', -1), selfSize: 30, children: [] }],
          },
          { callFrame: frame('a', 'file:///repo/dist/p2p.mjs', 9), selfSize: 50, children: [] },
          { callFrame: frame('b', 'node:internal/buffer', 0), selfSize: 200, children: [] },
          {
            // The sampler's own work, and what it called: left out.
            callFrame: frame('stop', 'file:///repo/bench/heap-sampling.mjs', 30),
            selfSize: 1000,
            children: [{ callFrame: frame('post', 'node:inspector', 5), selfSize: 4000, children: [] }],
          },
        ],
      },
    };
    assert.deepEqual(sumAllocations(profile), {
      total: 380,
      functions: [
        ['b node:internal/buffer:1', 200],
        ['a dist/p2p.mjs:10', 150],
        ['(anonymous) (built-in)', 30],
      ],
    });
  });
});
