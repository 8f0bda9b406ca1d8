import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { countCalls, fileLines, type Coverage } from '../../bench/calls.js';

describe('bench/calls: countCalls', () => {
  it('counts the calls of a real process from the coverage Node writes at its exit', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'p2p-calls-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const script = join(dir, 'work.mjs');
    writeFileSync(
      script,
      'function hot() { return 1; }\nconst cold = () => 2;\nlet s = 0;\nfor (let i = 0; i < 7; i++) s += hot();\ns += cold();\n',
    );
    const out = join(dir, 'cov');
    execFileSync(process.execPath, [script], {
      env: { PATH: process.env['PATH'] ?? '', NODE_V8_COVERAGE: out },
      timeout: 20_000,
    });
    const [file] = readdirSync(out).filter((f) => f.startsWith('coverage-'));
    assert.ok(file !== undefined, 'Node wrote a coverage file');
    const coverage = JSON.parse(readFileSync(join(out, file), 'utf8')) as Coverage;
    const counts = new Map(countCalls(coverage, fileLines()).functions);
    assert.equal(counts.get('hot work.mjs:1'), 7);
    assert.equal(counts.get('cold work.mjs:2'), 1);
    assert.equal(counts.get('(anonymous) work.mjs:1'), 1, 'the module itself, run once');

    // Changed since it ran: its lines would be wrong, so places are offsets.
    writeFileSync(script, `// edited\n${readFileSync(script, 'utf8')}`);
    const stale = new Map(countCalls(coverage, fileLines()).functions);
    assert.equal(stale.get('hot work.mjs:@0'), 7);
    const arrowAt = 'function hot() { return 1; }\nconst cold = '.length;
    assert.equal(stale.get(`cold work.mjs:@${arrowAt}`), 1);
  });

  it('sums per name and place, most called first, and skips functions never called', () => {
    const coverage: Coverage = {
      result: [
        {
          url: 'file:///repo/dist/p2p.mjs',
          functions: [
            { functionName: 'a', ranges: [{ startOffset: 10, endOffset: 19, count: 3 }] },
            { functionName: 'b', ranges: [{ startOffset: 20, endOffset: 29, count: 0 }] },
            { functionName: '', ranges: [{ startOffset: 30, endOffset: 39, count: 5 }] },
          ],
        },
        {
          url: 'node:internal/buffer',
          functions: [{ functionName: 'a', ranges: [{ startOffset: 10, endOffset: 19, count: 1 }] }],
        },
      ],
    };
    const counts = countCalls(coverage);
    assert.equal(counts.total, 9);
    assert.deepEqual(counts.functions, [
      ['(anonymous) dist/p2p.mjs:@30', 5],
      ['a dist/p2p.mjs:@10', 3],
      ['a node:internal/buffer:@10', 1],
    ]);
  });
});
