import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { describe, it } from 'node:test';
import { procsFor, type Proc, type SentEvent } from '../helpers/procs.js';

// `script` (util-linux; .ci/run installs it if missing) gives the node a pseudo-terminal, so it runs
// its interactive console. Without it this spec fails loudly rather than skipping.
const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

/** An ANSI control sequence (cursor moves, line clears), as readline writes them. */
const CSI = new RegExp(String.raw`\x1b\[[0-9;?]*[A-Za-z]`, 'g');

/** What the terminal shows, without ANSI escapes and carriage returns. */
function screen(proc: Proc, from = 0): string {
  return proc.stdout.slice(from).replace(CSI, '').replace(/\r/g, '');
}

function waitForScreen(proc: Proc, pattern: RegExp, from = 0, timeoutMs = 8_000): Promise<RegExpMatchArray> {
  return proc.waitUntil(() => screen(proc, from).match(pattern) ?? undefined, timeoutMs, `screen ${pattern}`);
}

/** Starts bin/p2p in a 200×50 pseudo-terminal with `nick` and `TERM=term`; resolves once its prompt shows. */
async function startInTerminal(
  procs: ReturnType<typeof procsFor>,
  nick: string,
  term: string,
): Promise<{ tty: Proc; id: string; port: string }> {
  const tty = procs.spawn(
    ['-qfec', `stty cols 200 rows 50; exec bin/p2p 0 --host 127.0.0.1 --nick ${nick}`, '/dev/null'],
    { command: 'script', json: false, env: { TERM: term } },
  );
  const [, id, port] = await waitForScreen(tty, /node [0-9a-f]{6} \(([0-9a-f]+)\) listening on port (\d+)/);
  await waitForScreen(tty, new RegExp(`^${nick}> `, 'm'));
  return { tty, id: id!, port: port! };
}

/**
 * Sets the width of the node's terminal, as a window resized does: the kernel sends the node (in
 * the terminal's foreground) SIGWINCH, and Node emits 'resize' on stdout.
 */
function resizeTerminal(tty: Proc, columns: number): void {
  const children = readFileSync(`/proc/${tty.pid}/task/${tty.pid}/children`, 'utf8').trim().split(/\s+/);
  assert.equal(children.length, 1, 'script runs the node (exec) as its one child');
  const pty = readlinkSync(`/proc/${children[0]!}/fd/0`);
  const stty = spawnSync('stty', ['-F', pty, 'cols', String(columns)], { encoding: 'utf8' });
  assert.equal(stty.status, 0, stty.stderr);
}

describe('bin/p2p in a terminal', () => {
  it('has `script` (util-linux) to give it a pseudo-terminal', () => {
    assert.ok(hasScript, 'install util-linux (bsdutils) for `script`: the terminal tests need a pty');
  });

  it('shows a prompt, answers /help, /peers and /nick, and shows messages as "[HH:MM:SS] nick (id): text"', async (t) => {
    const procs = procsFor(t);
    const { tty, id, port } = await startInTerminal(procs, 'tty', 'xterm');

    let mark = tty.stdout.length;
    tty.write('/help\r');
    await waitForScreen(tty, /commands:[\s\S]*\/peers[\s\S]*\/nick NAME[\s\S]*\/quit/, mark);

    mark = tty.stdout.length;
    tty.write('/peers\r');
    await waitForScreen(tty, /no peers connected/, mark);

    const jay = await procs.node({ nick: 'jay', peers: [`127.0.0.1:${port}`] });
    const jid = jay.ready.id.slice(0, 6);
    await jay.waitForPeerUp(id);
    await waitForScreen(tty, new RegExp(`\\* jay \\(${jid}\\) joined from 127\\.0\\.0\\.1:`));

    mark = tty.stdout.length;
    tty.write('/peers\r');
    await waitForScreen(
      tty,
      new RegExp(`1 peer:\\n\\s+${jid}\\s+jay\\s+127\\.0\\.0\\.1:\\d+ \\(in\\)`),
      mark,
    );

    mark = tty.stdout.length;
    tty.write('/nick zed\r');
    await waitForScreen(tty, /you are now zed\n(?:.*\n)*?zed> /, mark);

    mark = tty.stdout.length;
    jay.send('hello terminal');
    const sent = await jay.waitForEvent((e): e is SentEvent => e.event === 'sent');
    const clock = new Date(sent.ts).toTimeString().slice(0, 8);
    const shown = await waitForScreen(tty, /^\[\d\d:\d\d:\d\d\] jay \([0-9a-f]{6}\): hello terminal$/m, mark);
    assert.equal(shown[0], `[${clock}] jay (${jid}): hello terminal`);

    tty.write('typed in the terminal\r');
    const received = await jay.waitForMessage('typed in the terminal');
    assert.equal(received.from, id);
    assert.equal(received.nick, 'zed', '/nick changes the name peers see');

    tty.write('/quit\r');
    assert.deepEqual(await tty.waitForExit(5_000), { code: 0, signal: null });
    await jay.waitForPeerDown(id);
  });

  it("with TERM=dumb writes no escape sequence: a message that arrives mid-line goes on the prompt's row, then the prompt and the half-typed line again", async (t) => {
    const procs = procsFor(t);
    const { tty, id, port } = await startInTerminal(procs, 'dim', 'dumb');
    const jay = await procs.node({ nick: 'jay', peers: [`127.0.0.1:${port}`] });
    await waitForScreen(tty, /\* jay \([0-9a-f]{6}\) joined from /);

    tty.write('half');
    await waitForScreen(tty, /dim> half$/);
    const mark = tty.stdout.length;
    jay.send('while you type');
    // The row of the prompt and line blanked with spaces from its start, the message, then both again.
    await tty.waitUntil(
      () =>
        /^\r {9}\r\[[\d:]{8}\] jay \([0-9a-f]{6}\): while you type\r?\ndim> half$/.test(
          tty.stdout.slice(mark),
        )
          ? true
          : undefined,
      8_000,
      'the message above the prompt and half-typed line',
    );
    tty.write(' done\r');
    assert.equal((await jay.waitForMessage('half done')).from, id);
    tty.write('/peers\r');
    await waitForScreen(tty, /1 peer:/);
    tty.write('/quit\r');
    assert.deepEqual(await tty.waitForExit(5_000), { code: 0, signal: null });
    // Before: each line above the prompt came after \x1b[1G\x1b[0J (to column 1, clear below).
    assert.ok(!tty.stdout.includes('\x1b'), JSON.stringify(tty.stdout));
  });

  it('with TERM=dumb writes no escape sequence when the terminal is resized (readline does not draw the line again)', async (t) => {
    const procs = procsFor(t);
    const { tty } = await startInTerminal(procs, 'dim', 'dumb');
    tty.write('half');
    await waitForScreen(tty, /dim> half$/);
    resizeTerminal(tty, 120);
    // An answer after the resize: the resize was seen before it (its signal came first).
    tty.write('\r/peers\r');
    await waitForScreen(tty, /no peers connected/);
    tty.write('/quit\r');
    assert.deepEqual(await tty.waitForExit(5_000), { code: 0, signal: null });
    // Before: readline drew the prompt and line again at the resize, \x1b[1G\x1b[0Jdim> half\x1b[10G.
    assert.ok(!tty.stdout.includes('\x1b'), JSON.stringify(tty.stdout));
  });

  it('with TERM=dumb blanks a half-typed line of wide (CJK) characters by the columns they take, two each', async (t) => {
    const procs = procsFor(t);
    const { tty, port } = await startInTerminal(procs, 'dim', 'dumb');
    const jay = await procs.node({ nick: 'jay', peers: [`127.0.0.1:${port}`] });
    await waitForScreen(tty, /\* jay \([0-9a-f]{6}\) joined from /);

    /** Sends `text` from jay and resolves once the terminal shows what `expected` matches after `mark`. */
    const messageShown = async (text: string, expected: (line: string) => RegExp): Promise<void> => {
      const mark = tty.stdout.length;
      jay.send(text);
      const line = String.raw`\[[\d:]{8}\] jay \([0-9a-f]{6}\): ${text}`;
      await tty.waitUntil(
        () => (expected(line).test(tty.stdout.slice(mark)) ? true : undefined),
        8_000,
        `${text} above the prompt and half-typed line: ${expected(line)}`,
      );
    };

    tty.write('half 你好');
    await waitForScreen(tty, /dim> half 你好$/);
    // 'dim> half ' and two characters two columns wide: 14 columns (12 UTF-16 units).
    await messageShown('first', (line) => new RegExp(String.raw`^\r {14}\r${line}\r?\ndim> half 你好$`));

    // 100 more: 214 columns, more than the terminal's 200 (112 units, fewer): no blanking, a new row.
    const wide = '字'.repeat(100);
    tty.write(wide);
    await waitForScreen(tty, new RegExp(`dim> half 你好${wide}$`));
    await messageShown('second', (line) => new RegExp(String.raw`^\r?\n${line}\r?\ndim> half 你好${wide}$`));

    tty.write('\r/quit\r');
    assert.deepEqual(await tty.waitForExit(5_000), { code: 0, signal: null });
    assert.ok(!tty.stdout.includes('\x1b'), JSON.stringify(tty.stdout));
  });
});
