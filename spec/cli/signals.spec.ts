/**
 * Stop signals: SIGINT, SIGTERM and SIGHUP (a closed terminal) all make the node leave cleanly: bye
 * to its peers, its history closed, its data directory's lock released, exit code 0. That holds from
 * the moment the CLI's code runs, during start-up too, and when the terminal it runs in goes away.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { main } from '../../lib/cli/main.js';
import { isAlive } from '../helpers/pids.js';
import { procsFor, WAIT_MS, type Proc, type ReadyEvent } from '../helpers/procs.js';
import { tempDir } from '../helpers/temp.js';

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

/** A line of a JavaScript stack trace, or Node's report of a failed assertion in its own code. */
const CRASH = /^\s+at |Assertion failed|Unhandled 'error'/m;

/** Polls `check` every millisecond until it holds; fails after `timeoutMs`. */
async function pollUntil(check: () => boolean, what: string, timeoutMs = WAIT_MS): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(1);
  }
}

/** Whether a process catches SIGHUP (bit 0 of SigCgt in /proc/PID/status, Linux). */
function catchesSighup(pid: number): boolean {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false; // gone
  }
  const caught = /^SigCgt:\s*([0-9a-f]+)$/m.exec(status);
  return caught !== null && (BigInt(`0x${caught[1]!}`) & 1n) === 1n;
}

/** Gone, or a zombie that nobody reaps (an orphan in a container without an init). */
function ended(pid: number): boolean {
  if (!isAlive(pid)) return true;
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

const readyOf = (proc: Proc): Promise<ReadyEvent> =>
  proc.waitForEvent((e): e is ReadyEvent => e.event === 'ready', WAIT_MS, 'the ready event');

describe('bin/p2p: SIGHUP', () => {
  it('leaves as on SIGTERM: exit 0, a bye to its peers, and its data directory free for the next node at once', async (t) => {
    const procs = procsFor(t);
    const dataDir = join(tempDir(t, 'sighup'), 'node');
    const peer = await procs.node({ nick: 'peer' });
    const args = ['0', `127.0.0.1:${peer.ready.port}`, '--json', '--host', '127.0.0.1', '--nick', 'hup'];
    const hup = procs.spawn([...args, '--data-dir', dataDir]);
    const { id } = await readyOf(hup);
    await peer.waitForPeerUp(id);

    hup.signal('SIGHUP');
    // Before, the default action killed it: exit by the signal, the lock left behind, no bye.
    assert.deepEqual(await hup.waitForExit(), { code: 0, signal: null });
    assert.doesNotMatch(hup.stderr, CRASH);
    assert.equal((await peer.waitForPeerDown(id)).reason, 'it shut down', 'the peer was told');
    assert.ok(!existsSync(join(dataDir, 'lock')), 'the data directory is unlocked');

    const next = procs.spawn([...args, '--data-dir', dataDir]);
    assert.equal((await readyOf(next)).id, id, 'a node starts on the same data directory right away');
  });
});

describe('bin/p2p: a stop signal during start-up', () => {
  /**
   * Starts a node on a fresh data directory, sends it SIGTERM once `moment` resolves, and checks that
   * it left cleanly: exit 0, no stack trace, the lock released.
   */
  async function stopWhileStarting(
    t: TestContext,
    moment: (proc: Proc, dataDir: string) => Promise<void>,
  ): Promise<string> {
    const procs = procsFor(t);
    const dataDir = join(tempDir(t, 'early'), 'node');
    mkdirSync(dataDir);
    const proc = procs.spawn(['0', '--json', '--host', '127.0.0.1', '--data-dir', dataDir]);
    await moment(proc, dataDir);
    proc.signal('SIGTERM');
    assert.deepEqual(await proc.waitForExit(), { code: 0, signal: null }, proc.describe());
    assert.doesNotMatch(proc.stderr, CRASH);
    assert.ok(!existsSync(join(dataDir, 'lock')), 'the data directory is unlocked');
    return dataDir;
  }

  // Node's own start (~0.1 s) runs no code of ours: a signal then gets the default action. From the
  // first line of bin/p2p on, one is caught (it then catches SIGHUP, which Node itself does not).
  it('as soon as bin/p2p runs (while the CLI code loads): exit 0, the lock released', async (t) => {
    await stopWhileStarting(t, (proc) => pollUntil(() => catchesSighup(proc.pid), 'the CLI to catch SIGHUP'));
  });

  it('once it holds its data directory, before it listens: exit 0, the lock released, the directory usable', async (t) => {
    const dataDir = await stopWhileStarting(t, (_, dir) =>
      pollUntil(() => existsSync(join(dir, 'lock')), 'the data directory lock'),
    );
    const next = procsFor(t).spawn(['0', '--json', '--host', '127.0.0.1', '--data-dir', dataDir]);
    await readyOf(next);
  });

  it('a short while after bin/p2p runs: exit 0, the lock released', async (t) => {
    await stopWhileStarting(t, async (proc) => {
      await pollUntil(() => catchesSighup(proc.pid), 'the CLI to catch SIGHUP');
      await delay(40);
    });
  });
});

describe('main: a stop signal before the node listens', () => {
  for (const signal of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
    it(`${signal} right after the start is not lost: main resolves 0 once the node is up, with no ready event, and frees the data directory`, async (t) => {
      const dataDir = join(tempDir(t, 'main-early'), 'node');
      const out: string[] = [];
      const sink = () =>
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            out.push(String(chunk));
            callback();
          },
        });
      const stdin = new PassThrough();
      const signals = new EventEmitter();
      const io = { stdin, stdout: sink(), stderr: sink(), env: {}, signals };
      const args = ['0', '--host', '127.0.0.1', '--json', '--log-level', 'error', '--data-dir', dataDir];
      const code = main(args, io);
      t.after(async () => {
        // Before, the signal reached no listener and main ran on: stop it now that it listens.
        signals.emit('SIGTERM');
        await code;
        stdin.end();
      });
      signals.emit(signal);
      const result = await Promise.race([code, delay(WAIT_MS).then(() => 'still running')]);
      assert.equal(result, 0);
      assert.ok(!out.join('').includes('"ready"'), 'a node that is leaving says no ready');
      assert.ok(!existsSync(join(dataDir, 'lock')), 'the data directory is unlocked');
      for (const name of [signal, 'exit'])
        assert.equal(signals.listenerCount(name), 0, `no ${name} listener left`);
    });
  }
});

describe('bin/p2p in a terminal that is closed', () => {
  it('leaves cleanly: a bye to its peers, the lock released, no unhandled EIO and no abort at exit', async (t) => {
    assert.ok(hasScript, 'install util-linux (bsdutils) for `script`: the terminal tests need a pty');
    const procs = procsFor(t);
    const dir = tempDir(t, 'hangup');
    const dataDir = join(dir, 'node');
    const errFile = join(dir, 'stderr');
    const peer = await procs.node({ nick: 'peer' });
    const command = `stty cols 200 rows 50; exec bin/p2p 0 127.0.0.1:${peer.ready.port} --host 127.0.0.1 --nick tty --data-dir ${dataDir} 2>${errFile}`;
    const tty = procs.spawn(['-qfec', command, '/dev/null'], {
      command: 'script',
      json: false,
      env: { TERM: 'xterm' },
    });
    const [, id] = await tty.waitForStdout(/node [0-9a-f]{6} \(([0-9a-f]+)\) listening on port/);
    await peer.waitForPeerUp(id!);
    await tty.waitForStdout(/tty> /);
    const children = readFileSync(`/proc/${tty.pid}/task/${tty.pid}/children`, 'utf8').trim().split(/\s+/);
    assert.equal(children.length, 1, 'script runs the node (exec) as its one child');
    const node = Number(children[0]);
    // Once `script` is killed the node is no child of procs' any more: should it outlive the wait
    // below, it is stopped here, not left running after the spec.
    t.after(() => {
      try {
        process.kill(node, 'SIGKILL');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    });

    // Killing `script` closes the terminal's master side: the kernel hangs the terminal up, sends
    // the node (its session leader) SIGHUP, and its reads and mode changes fail with EIO.
    process.kill(tty.pid, 'SIGKILL');
    await pollUntil(() => ended(node), 'the node to exit');
    const stderr = readFileSync(errFile, 'utf8');
    // Before: an unhandled 'error' (setRawMode EIO) and, at exit, Node's abort restoring the gone
    // terminal's modes; before that, SIGHUP killed it outright.
    assert.doesNotMatch(stderr, CRASH);
    assert.equal((await peer.waitForPeerDown(id!)).reason, 'it shut down', 'the peer was told');
    assert.ok(!existsSync(join(dataDir, 'lock')), 'the data directory is unlocked');
  });
});
