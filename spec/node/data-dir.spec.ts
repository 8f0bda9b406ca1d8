import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import {
  existsSync,
  linkSync,
  readdirSync,
  readFileSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createServer } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { DataDirLockedError, defaultDataDir, lockDataDir } from '../../lib/node/data-dir.js';
import { createNode } from '../../lib/node/node.js';
import { tempDir } from '../helpers/temp.js';

const MODULE = new URL('../../lib/node/data-dir.ts', import.meta.url).href;
const HAS_PROC = existsSync('/proc/self/stat');
/** Bound of one answer from a child: tsx compiling the module on a loaded CI machine included. */
const ANSWER_MS = 15_000;

/**
 * A child process that takes and releases the lock on command, one stdin line each: `lock [AT]`
 * (at the moment AT, ms since the epoch, so that several start together) answers `won` or
 * `refused PID` (`refused -` without a pid), `release` answers `released`, `die` exits without
 * releasing.
 */
const HOLDER_SCRIPT = `
import { createInterface } from 'node:readline';
const { lockDataDir, DataDirLockedError } = await import(process.env.DATA_DIR_MODULE);
const say = (line) => process.stdout.write(line + '\\n');
let release;
createInterface({ input: process.stdin }).on('line', (command) => {
  if (command.startsWith('lock')) {
    // 'lock AT': spin until the moment AT (ms), so that racers start at once.
    const at = Number(command.split(' ')[1] ?? 0);
    while (performance.timeOrigin + performance.now() < at);
    try {
      release = lockDataDir(process.env.LOCK_DIR);
      say('won');
    } catch (err) {
      say(err instanceof DataDirLockedError ? 'refused ' + (err.pid ?? '-') : 'error ' + err.message);
    }
  } else if (command === 'release') {
    release?.();
    release = undefined;
    say('released');
  } else if (command === 'die') {
    process.exit(0);
  }
});
say('ready');
`;

interface Holder {
  readonly pid: number;
  /** Sends `command` and resolves with the child's answer. */
  ask(command: string): Promise<string>;
  /** Resolves once the child has exited. */
  readonly exited: Promise<void>;
}

/** Starts a lock holder on `dir`; the test's `after` kills it (by its pid) if it still runs. */
async function holder(t: TestContext, dir: string): Promise<Holder> {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', HOLDER_SCRIPT],
    { env: { ...process.env, DATA_DIR_MODULE: MODULE, LOCK_DIR: dir }, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const lines: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const waiter = waiters.shift();
    if (waiter === undefined) lines.push(line);
    else waiter(line);
  });
  const next = (what: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const line = lines.shift();
      if (line !== undefined) return resolve(line);
      const timer = setTimeout(
        () => reject(new Error(`child ${child.pid}: no answer to ${what}`)),
        ANSWER_MS,
      );
      waiters.push((answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`child ${child.pid} exited before answering ${what}`));
      });
    });
  assert.equal(await next('start'), 'ready');
  return {
    pid: child.pid!,
    exited,
    ask: (command) => {
      const answer = next(command);
      child.stdin!.write(`${command}\n`);
      return answer;
    },
  };
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  return child.pid!;
}

const lockPath = (dir: string): string => join(dir, 'lock');
const lockLines = (dir: string): string[] => readFileSync(lockPath(dir), 'utf8').split('\n');
/** What the lock's first line names. */
const lockPid = (dir: string): number => Number(lockLines(dir)[0]);

/** Runs `fn` expecting a DataDirLockedError, and returns it. */
function refused(fn: () => unknown): DataDirLockedError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DataDirLockedError, `a DataDirLockedError, got ${String(err)}`);
    return err;
  }
  assert.fail('the lock was taken');
}

describe('defaultDataDir', () => {
  it('is node-PORT under $XDG_STATE_HOME/p2p, else under ~/.local/state/p2p', () => {
    assert.equal(
      defaultDataDir(8001, { XDG_STATE_HOME: '/srv/state' }),
      join('/srv/state', 'p2p', 'node-8001'),
    );
    const home = join(homedir(), '.local', 'state', 'p2p', 'node-8001');
    assert.equal(defaultDataDir(8001, {}), home);
    assert.equal(defaultDataDir(8001, { XDG_STATE_HOME: '' }), home);
  });

  it('ignores a relative $XDG_STATE_HOME, as the XDG spec says: the directory would follow the working directory', () => {
    const home = join(homedir(), '.local', 'state', 'p2p', 'node-8001');
    assert.equal(defaultDataDir(8001, { XDG_STATE_HOME: 'state' }), home);
    assert.equal(defaultDataDir(8001, { XDG_STATE_HOME: './state' }), home);
    assert.equal(defaultDataDir(8001, { XDG_STATE_HOME: '~/.local/state' }), home);
  });
});

describe('lockDataDir', () => {
  it('creates and takes a free directory, names its pid in the lock, and releases it', (t) => {
    const dir = join(tempDir(t, 'lock'), 'node-1', 'nested');
    const release = lockDataDir(dir);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.deepEqual(readdirSync(dir), ['lock'], 'no file of the taking left behind');
    assert.equal(lockPid(dir), process.pid);
    release();
    assert.deepEqual(readdirSync(dir), []);
    release(); // the second time does nothing
    lockDataDir(dir)();
    assert.deepEqual(readdirSync(dir), []);
  });

  it('refuses a second lock on one directory within one process, until the first is released', (t) => {
    const dir = tempDir(t, 'lock');
    const release = lockDataDir(dir);
    t.after(release);
    const err = refused(() => lockDataDir(dir));
    assert.equal(err.code, 'ERR_DATA_DIR_LOCKED');
    assert.equal(err.dir, dir);
    assert.equal(err.pid, process.pid);
    assert.equal(err.message, `data directory ${dir} is in use by this process (pid ${process.pid})`);
    assert.equal(lockPid(dir), process.pid, 'the refused attempt left the lock alone');
    release();
    lockDataDir(dir)();
  });

  it('refuses a directory another live process holds, and takes it once that one released it', async (t) => {
    const dir = tempDir(t, 'lock');
    const other = await holder(t, dir);
    assert.equal(await other.ask('lock'), 'won');
    const err = refused(() => lockDataDir(dir));
    assert.equal(err.pid, other.pid);
    assert.equal(err.message, `data directory ${dir} is in use by another process (pid ${other.pid})`);
    assert.equal(await other.ask('lock'), `refused ${other.pid}`, 'it refuses itself a second lock too');
    refused(() => lockDataDir(dir)); // refused twice: nothing was changed by the first refusal
    assert.equal(await other.ask('release'), 'released');
    assert.equal(existsSync(lockPath(dir)), false);
    const release = lockDataDir(dir);
    assert.equal(await other.ask('lock'), `refused ${process.pid}`);
    release();
  });

  it('takes over the lock of a process that died holding it', async (t) => {
    const dir = tempDir(t, 'lock');
    const other = await holder(t, dir);
    assert.equal(await other.ask('lock'), 'won');
    void other.ask('die').catch(() => {}); // it exits without answering
    await other.exited;
    assert.equal(lockPid(dir), other.pid, 'its lock is left behind');
    const release = lockDataDir(dir);
    assert.equal(lockPid(dir), process.pid);
    assert.deepEqual(readdirSync(dir), ['lock']);
    release();
  });

  it('takes over the lock of a dead pid in the format of p2p 0.1.0 (the bare pid), refuses a live one', async (t) => {
    const dir = tempDir(t, 'lock');
    writeFileSync(lockPath(dir), `${await deadPid()}\n`);
    lockDataDir(dir)();
    const other = await holder(t, dir);
    writeFileSync(lockPath(dir), `${other.pid}\n`);
    assert.equal(refused(() => lockDataDir(dir)).pid, other.pid);
  });

  it('takes over a lock whose pid was reused by another live process (Linux: its start time differs)', async (t) => {
    const dir = tempDir(t, 'lock');
    const other = await holder(t, dir);
    assert.equal(await other.ask('lock'), 'won');
    const [pid, start, token] = lockLines(dir);
    if (!HAS_PROC) {
      // No start to compare (macOS, Windows): a live pid is all that is known, and it is in use.
      assert.equal(start, '-');
      writeFileSync(lockPath(dir), `${pid}\n${'0'.repeat(36)}:1\n${token}\n`);
      assert.equal(refused(() => lockDataDir(dir)).pid, other.pid);
      return;
    }
    assert.equal(pid, String(other.pid));
    assert.match(start!, /^[0-9a-f-]{36}:\d+$/, 'boot id and start time');
    // The same pid, written by a process that started earlier (the lock outlived it).
    const startTime = Number(start!.split(':')[1]);
    writeFileSync(lockPath(dir), `${pid}\n${start!.split(':')[0]}:${startTime - 1}\n${token}\n`);
    const release = lockDataDir(dir);
    assert.equal(lockPid(dir), process.pid);
    // The live child's release finds a lock that is not its own any more, and leaves it.
    assert.equal(await other.ask('release'), 'released');
    assert.equal(lockPid(dir), process.pid, 'the other release did not remove our lock');
    release();
  });

  it('takes over the lock of a zombie (exited, not yet reaped by its parent): it is dead', async (t) => {
    const dir = tempDir(t, 'lock');
    if (!HAS_PROC) {
      // No /proc (macOS, Windows): a zombie cannot be told from a live process; a live pid is in use.
      const other = await holder(t, dir);
      writeFileSync(lockPath(dir), `${other.pid}\n`);
      assert.equal(refused(() => lockDataDir(dir)).pid, other.pid);
      return;
    }
    // The child exits once its parent, the shell, has become `sleep` (which never reaps it): a
    // zombie while that sleeps. Had it exited before, the shell could have reaped it (dash does
    // before its next command), and it was gone.
    const child =
      'i=0; while [ $i -lt 500 ] && [ "$(cat /proc/$$/comm)" != sleep ]; do i=$((i+1)); sleep 0.01; done';
    const parent = spawn('sh', ['-c', `${child} & echo $!; exec sleep 60`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const parentExited = new Promise((resolve) => parent.once('exit', resolve));
    t.after(async () => {
      if (parent.exitCode === null && parent.signalCode === null) parent.kill('SIGKILL');
      await parentExited;
    });
    const [line] = (await once(createInterface({ input: parent.stdout }), 'line')) as [string];
    const zombie = Number(line);
    const state = (): string | undefined => {
      try {
        const stat = readFileSync(`/proc/${zombie}/stat`, 'latin1');
        return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
      } catch {
        return undefined;
      }
    };
    for (let i = 0; i < 200 && state() !== 'Z'; i++) await delay(10);
    assert.equal(state(), 'Z', `${zombie} is a zombie`);
    const stat = readFileSync(`/proc/${zombie}/stat`, 'latin1');
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[22 - 3]!;
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
    // A lock of 0.1.0's format (the bare pid), and one of this version's naming its very start.
    for (const lock of [`${zombie}\n`, `${zombie}\n${boot}:${start}\n${'d'.repeat(32)}\n`]) {
      writeFileSync(lockPath(dir), lock);
      const release = lockDataDir(dir);
      assert.equal(lockPid(dir), process.pid, JSON.stringify(lock));
      release();
    }
  });

  it('refuses, without /proc, a lock that names its own pid but is not its own: it may be this process', (t) => {
    const dir = tempDir(t, 'lock');
    // A child without /proc (its reads fail as on macOS): the module loads after fs is patched.
    const script = `
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
const read = fs.readFileSync;
fs.readFileSync = (path, ...rest) => {
  if (String(path).startsWith('/proc/')) throw Object.assign(new Error('ENOENT: ' + path), { code: 'ENOENT' });
  return read(path, ...rest);
};
syncBuiltinESMExports();
const { lockDataDir, DataDirLockedError } = await import(process.env.DATA_DIR_MODULE);
const dir = process.env.LOCK_DIR;
// Another thread or module copy of this process (a token not of this module) took it.
fs.writeFileSync(dir + '/lock', process.pid + '\\n-\\n' + 'e'.repeat(32) + '\\n');
try {
  lockDataDir(dir);
  console.log('won');
} catch (err) {
  console.log(err instanceof DataDirLockedError ? 'refused ' + err.pid + ' ' + process.pid : 'error ' + err.message);
}`;
    const child = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, DATA_DIR_MODULE: MODULE, LOCK_DIR: dir },
      encoding: 'utf8',
      timeout: ANSWER_MS,
    });
    const [answer, pid, own] = child.stdout.trim().split(' ');
    assert.equal(answer, 'refused', child.stdout + child.stderr);
    assert.equal(pid, own, 'refused as held by itself');
  });

  it('leaves no temporary file behind when it cannot write its lock (a full disk, a file size limit)', (t) => {
    const dir = tempDir(t, 'lock');
    // A child under `ulimit -f 0`: creating the file works, writing a byte to it fails (EFBIG; Node
    // ignores SIGXFSZ), as a full disk lets a file be created and refuses its data.
    const script = `
const { lockDataDir } = await import(process.env.DATA_DIR_MODULE);
try {
  lockDataDir(process.env.LOCK_DIR);
  console.log('won');
} catch (err) {
  console.log(err.code);
}`;
    const child = spawnSync(
      'bash',
      [
        '-c',
        'ulimit -f 0 && exec "$0" "$@"',
        process.execPath,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
      ],
      {
        env: { ...process.env, DATA_DIR_MODULE: MODULE, LOCK_DIR: dir },
        encoding: 'utf8',
        timeout: ANSWER_MS,
      },
    );
    assert.equal(child.stdout.trim(), 'EFBIG', child.stderr);
    assert.deepEqual(readdirSync(dir), [], 'no lock, and no lock.<token>.tmp');
  });

  it('takes over a lock file that is not a lock; an empty one only once it is a few seconds old', (t) => {
    const dir = tempDir(t, 'lock');
    for (const garbage of ['hello\n', '\n', '-1\n', '0\n', `${process.pid}x\n`, 'x'.repeat(5000)]) {
      writeFileSync(lockPath(dir), garbage);
      lockDataDir(dir)();
      assert.deepEqual(readdirSync(dir), [], JSON.stringify(garbage.slice(0, 20)));
    }
    // Empty and new: p2p 0.1.0 creates its lock empty, then writes its pid.
    writeFileSync(lockPath(dir), '');
    const err = refused(() => lockDataDir(dir));
    assert.equal(err.pid, undefined);
    assert.equal(err.message, `data directory ${dir} is in use by another process`);
    const past = new Date(Date.now() - 10_000);
    utimesSync(lockPath(dir), past, past);
    lockDataDir(dir)();
    assert.deepEqual(readdirSync(dir), []);
  });

  it('removes a claim left by a process that died taking over a stale lock, then takes the lock', async (t) => {
    const dir = tempDir(t, 'lock');
    const dead = await deadPid();
    const stale = Buffer.from(`${dead}\n-\n${'a'.repeat(32)}\n`);
    writeFileSync(lockPath(dir), stale);
    // The claim on that lock (named as lib/node/data-dir.ts names it), held by a dead process.
    const { ino, size } = statSync(lockPath(dir));
    const id = createHash('sha256')
      .update(`lock\0${ino}\0${size}\0`)
      .update(stale)
      .digest('hex')
      .slice(0, 24);
    const claimer = join(dir, 'claimer');
    writeFileSync(claimer, `${dead}\n-\n${'b'.repeat(32)}\n`);
    linkSync(claimer, join(dir, `lock.claim-${id}`));
    const release = lockDataDir(dir);
    assert.equal(lockPid(dir), process.pid);
    assert.deepEqual(
      readdirSync(dir).sort(),
      ['claimer', 'lock'],
      'the claim is gone, and nothing else left',
    );
    release();
  });

  it('releases only its own lock: not one that replaced it, not one taken after its release', (t) => {
    const dir = tempDir(t, 'lock');
    const first = lockDataDir(dir);
    first();
    const second = lockDataDir(dir);
    first(); // again, late: the lock is the second's now
    assert.equal(lockPid(dir), process.pid);
    second();
    assert.equal(existsSync(lockPath(dir)), false);

    const third = lockDataDir(dir);
    const theirs = `${process.pid + 1}\n-\n${'c'.repeat(32)}\n`;
    writeFileSync(lockPath(dir), theirs); // as if another process held it now
    third();
    assert.equal(readFileSync(lockPath(dir), 'utf8'), theirs);
  });

  it('of 8 processes racing for one directory (stale lock, garbage, none), exactly one takes it, every round', async (t) => {
    const dir = tempDir(t, 'lock');
    const racers = await Promise.all(Array.from({ length: 8 }, () => holder(t, dir)));
    const pids = new Set(racers.map((r) => r.pid));
    const dead = await deadPid();
    const states = [`${dead}\n-\n${'d'.repeat(32)}\n`, `${dead}\n`, 'garbage\n', undefined];
    for (let round = 0; round < 24; round++) {
      const state = states[round % states.length];
      if (state !== undefined) writeFileSync(lockPath(dir), state);
      const at = performance.timeOrigin + performance.now() + 50;
      const answers = await Promise.all(racers.map((r) => r.ask(`lock ${at}`)));
      const winners = racers.filter((_, i) => answers[i] === 'won');
      assert.equal(winners.length, 1, `round ${round} (${JSON.stringify(state)}): ${answers.join(', ')}`);
      for (const answer of answers.filter((a) => a !== 'won')) {
        const pid = Number(/^refused (\d+)$/.exec(answer)?.[1]);
        assert.ok(pids.has(pid), `round ${round}: refused by a racer, got ${answer}`);
      }
      assert.equal(lockPid(dir), winners[0]!.pid, `round ${round}: the lock names the winner`);
      assert.deepEqual(readdirSync(dir), ['lock'], `round ${round}: no claim or temporary file left`);
      assert.equal(await winners[0]!.ask('release'), 'released');
      assert.deepEqual(readdirSync(dir), []);
    }
  });
});

describe('createNode and its data directory', () => {
  it('lets go of the data directory when it cannot listen, so that a retry on another port takes it', async (t) => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const address = server.address();
    assert.ok(typeof address === 'object' && address !== null);
    const dir = tempDir(t, 'node');
    await assert.rejects(createNode({ host: '127.0.0.1', port: address.port, dataDir: dir }), {
      code: 'EADDRINUSE',
    });
    assert.equal(existsSync(lockPath(dir)), false);
    const node = await createNode({ host: '127.0.0.1', dataDir: dir });
    await node.close();
  });

  it('checks its options before it locks the data directory', async (t) => {
    const dir = tempDir(t, 'node');
    await assert.rejects(createNode({ host: '127.0.0.1', dataDir: dir, maxPeers: 0 }), RangeError);
    assert.equal(existsSync(dir) && readdirSync(dir).includes('lock'), false);
    lockDataDir(dir)();
  });
});
