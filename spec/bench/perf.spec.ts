import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { perfNodeFlags, perfProblem, reportPerf, startPerf } from '../../bench/perf.js';
import { waitFor } from '../helpers/nodes.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A stand-in for Linux perf (the real one needs root or a lowered perf_event_paranoid, and is not on
 * every machine): `record` notes its arguments, and writes its -o file only when interrupted (or,
 * given a command after `--`, once that command ends), as perf does; `report` prints a line naming
 * its --sort.
 */
function fakePerf(dir: string, { refuse = false } = {}): string {
  const path = join(dir, 'perf');
  writeFileSync(
    path,
    `#!/bin/sh
if [ "$1" = record ]; then
  ${refuse ? 'echo "perf_event_paranoid setting is 4" >&2; exit 255' : ''}
  echo "$@" > "${dir}/record-args"
  out=""
  command=""
  while [ $# -gt 0 ]; do
    [ "$1" = -o ] && out="$2"
    if [ "$1" = -- ]; then shift; command="$*"; break; fi
    shift
  done
  if [ -n "$command" ]; then $command; echo samples > "$out"; exit 0; fi
  trap 'echo samples > "$out"; exit 0' INT
  i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
  exit 3
fi
if [ "$1" = report ]; then
  while [ $# -gt 0 ]; do [ "$1" = --sort ] && echo "report by $2"; shift; done
  exit 0
fi
exit 1
`,
  );
  chmodSync(path, 0o755);
  return path;
}

describe('bench/perf', () => {
  it('records the whole machine into DIR/NAME.data until stopped, and waits for perf to write it', async (t) => {
    const dir = tempDir(t, 'perf');
    const perf = fakePerf(dir);
    const recording = await startPerf(dir, 'mesh3-r1', perf);
    t.after(() => recording.stop());
    const args = readFileSync(join(dir, 'record-args'), 'utf8').trim().split(' ');
    assert.deepEqual(args.slice(0, 2), ['record', '-a'], 'every process on every core');
    assert.equal(args[args.indexOf('-o') + 1], join(dir, 'mesh3-r1.data'));
    assert.equal(existsSync(join(dir, 'mesh3-r1.data')), false, 'nothing written while recording');
    await recording.stop();
    assert.equal(readFileSync(join(dir, 'mesh3-r1.data'), 'utf8'), 'samples\n');
  });

  it('is told to stop when the process that started it exits, so no recording outlives the benchmark', async (t) => {
    const dir = tempDir(t, 'perf');
    const script = join(dir, 'start-and-exit.mjs');
    const module = fileURLToPath(new URL('../../bench/perf.ts', import.meta.url));
    // As the benchmark does on SIGTERM: process.exit while a recording runs.
    writeFileSync(
      script,
      `const { startPerf } = await import(${JSON.stringify(module)});\n` +
        `await startPerf(${JSON.stringify(dir)}, 'left', ${JSON.stringify(fakePerf(dir))});\n` +
        'process.exit(130);\n',
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', script], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(run.status, 130, run.stderr);
    await waitFor(
      () => existsSync(join(dir, 'left.data')),
      'the recording to be interrupted (it writes its file)',
      5_000,
    );
  });

  it('checks that perf can record here: nothing wrong, what perf said, or that it is missing', (t) => {
    const dir = tempDir(t, 'perf');
    assert.equal(perfProblem(dir, fakePerf(dir)), undefined);
    assert.match(
      perfProblem(dir, fakePerf(dir, { refuse: true })) ?? '',
      /exited with 255: perf_event_paranoid setting is 4/,
    );
    assert.match(perfProblem(dir, join(dir, 'no-such-perf')) ?? '', /ENOENT/);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.data')),
      [],
      'the check leaves no recording behind',
    );
  });

  it('fails with what perf said when it refuses to record, or is missing', async (t) => {
    const dir = tempDir(t, 'perf');
    await assert.rejects(
      startPerf(dir, 'x', fakePerf(dir, { refuse: true })),
      /exit 255\): perf_event_paranoid setting is 4/,
    );
    await assert.rejects(startPerf(dir, 'x', join(dir, 'no-such-perf')), /did not start.*ENOENT/);
  });

  it('starts a node that names its JavaScript for perf and writes its V8 log into DIR, not the working directory', (t) => {
    const dir = tempDir(t, 'perf');
    const cwd = tempDir(t, 'perf-cwd');
    const child = spawnSync(
      process.execPath,
      [...perfNodeFlags(dir), '-e', 'process.stdout.write(String(process.pid))'],
      {
        cwd,
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    const pid = Number(child.stdout);
    t.after(() => rmSync(`/tmp/perf-${pid}.map`, { force: true }));
    assert.equal(child.status, 0, child.stderr);
    assert.ok(Number.isInteger(pid) && pid > 0, `stdout is the pid alone: ${JSON.stringify(child.stdout)}`);
    assert.ok(existsSync(`/tmp/perf-${pid}.map`), 'the symbol map perf reads');
    assert.ok(existsSync(join(dir, `v8-${pid}.log`)), 'the V8 log in DIR');
    assert.deepEqual(readdirSync(cwd), [], 'nothing in the working directory');
  });

  it("writes the report by process and library, then by symbol, and removes the nodes' symbol maps and V8 logs", (t) => {
    const dir = tempDir(t, 'perf');
    // A pid no process has (above Linux's pid_max of 2^22), so no real map is touched.
    const pid = 9_000_000 + process.pid;
    const map = `/tmp/perf-${pid}.map`;
    writeFileSync(map, '0 10 JS:*f x.js:1\n');
    t.after(() => rmSync(map, { force: true }));
    const log = join(dir, `v8-${pid}.log`);
    writeFileSync(log, 'v8-version,11,3\n');
    reportPerf(dir, 'random20-r2', [pid], fakePerf(dir));
    const text = readFileSync(join(dir, 'random20-r2.txt'), 'utf8');
    assert.match(text, /# by process and library\nreport by comm,dso\n[^]*# by symbol\nreport by dso,sym/);
    assert.equal(existsSync(map), false);
    assert.equal(existsSync(log), false);
  });
});
