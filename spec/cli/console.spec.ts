import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { createInterface } from 'node:readline';
import { PassThrough, Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import fc from 'fast-check';
import {
  formatMessage,
  jsonConsole,
  lineBatch,
  MAX_LINE_CHARS,
  pipeLines,
  plainConsole,
  sanitize,
  ttyConsole,
  type ConsoleIo,
  type ConsoleSink,
} from '../../lib/cli/console.js';
import { main } from '../../lib/cli/main.js';
import { MAX_TEXT_LENGTH } from '../../lib/protocol/frames.js';
import type { ChatMessage, PeerInfo } from '../../lib/node/node.js';
import { rawPeer, waitFor } from '../helpers/nodes.js';
import { procsFor, type CliEvent, type SentEvent } from '../helpers/procs.js';
import { terminal, wrapped, type Cursor } from '../helpers/terminal.js';

/** The end of this turn of the event loop, after the sinks' own `setImmediate` flush. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** An ANSI control sequence (cursor moves, line clears), as readline writes them. */
const CSI = new RegExp(String.raw`\x1b\[[0-9;?]*[A-Za-z]`, 'g');

/** Writes to every fake stream of a test, in the order they reached the streams. */
type Journal = Array<{ readonly stream: string; readonly text: string }>;

/**
 * A stdout or stderr stand-in: a real Writable whose `write` is a spy. While `slow`, it keeps each
 * chunk's callback back, like a pipe whose reader has stopped: past `highWaterMark` bytes, `write`
 * returns false until `release()` lets it drain.
 */
function fakeStream(t: TestContext, name: string, journal: Journal, highWaterMark = 16 * 1024) {
  const held: Array<() => void> = [];
  const state = { slow: false };
  const stream = new Writable({
    highWaterMark,
    decodeStrings: false,
    write(chunk: string | Buffer, _encoding, callback) {
      journal.push({ stream: name, text: String(chunk) });
      if (state.slow) held.push(callback);
      else callback();
    },
  });
  const write = t.mock.method(stream, 'write');
  return {
    stream,
    /** What each call of `write` was given, in order. */
    writes: (): string[] => write.mock.calls.map((call) => String(call.arguments[0])),
    /** The chunks themselves. */
    chunks: (): unknown[] => write.mock.calls.map((call): unknown => call.arguments[0]),
    slow(): void {
      state.slow = true;
    },
    release(): void {
      state.slow = false;
      for (const callback of held.splice(0)) callback();
    },
  };
}

function fakeIo(t: TestContext, stdoutHighWaterMark?: number) {
  const journal: Journal = [];
  const stdin = new PassThrough();
  const stdout = fakeStream(t, 'stdout', journal, stdoutHighWaterMark);
  const stderr = fakeStream(t, 'stderr', journal);
  const io: ConsoleIo = { stdin, stdout: stdout.stream, stderr: stderr.stream };
  t.after(() => stdin.end());
  return { io, stdin, stdout, stderr, journal };
}

const ID = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
const message = (seq: number): ChatMessage => ({
  id: `m${seq}`,
  from: ID,
  nick: 'bob',
  text: `line ${seq}`,
  ts: Date.UTC(2025, 0, 1, 12, 0, 0),
  seq,
});
const PEER: PeerInfo = { id: ID, nick: 'bob', address: '127.0.0.1:8002', direction: 'out' };

/** The JSON events of one chunk of `--json` output. */
const eventsOf = (chunk: string): Array<Record<string, unknown>> =>
  chunk
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>);

describe('sanitize: text from the network as the terminal shows it', () => {
  it('escapes control characters and bidirectional overrides, turns a tab into a space, keeps the rest', () => {
    assert.equal(sanitize('a\tb\nc\u001b[2J\u009b\u007f'), 'a b\\x0ac\\x1b[2J\\x9b\\x7f');
    assert.equal(sanitize('evil\u202egnp.exe \u2066x\u2069'), 'evil\\u202egnp.exe \\u2066x\\u2069');
    const kept = 'שלום, привет, 👩\u200d💻, café';
    assert.equal(sanitize(kept), kept, 'right-to-left letters, emoji sequences (ZWJ) and accents stay');
  });

  it('leaves no control or bidirectional control character in any text (property)', () => {
    const forbidden = /[\p{Cc}\u202a-\u202e\u2066-\u2069]/u;
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        const shown = sanitize(text);
        assert.ok(!forbidden.test(shown), JSON.stringify(shown));
      }),
      { numRuns: 500 },
    );
  });
});

describe('console sinks: one stdout write per turn of the event loop', () => {
  it('writes every --json event of one turn in one write, in the order they came', async (t) => {
    const { io, stdout } = fakeIo(t);
    const sink = jsonConsole(io);
    t.after(() => sink.close());
    sink.ready({ id: ID, port: 8001, nick: 'alice' });
    sink.peerUp(PEER);
    for (let seq = 1; seq <= 1000; seq++) sink.message(message(seq));
    sink.sent(message(1001));
    sink.peers([PEER]);
    sink.history([message(1)], false);
    sink.peerDown(PEER, 'closed');
    assert.equal(stdout.writes().length, 0, 'nothing is written before the end of the turn');

    await nextTurn();
    const writes = stdout.writes();
    assert.equal(writes.length, 1, 'one write for the whole turn');
    const events = eventsOf(writes[0]!);
    assert.deepEqual(
      events.map((e) => e['event']),
      ['ready', 'peer-up', ...Array<string>(1000).fill('message'), 'sent', 'peers', 'history', 'peer-down'],
    );
    assert.deepEqual(
      events.filter((e) => e['event'] === 'message').map((e) => e['seq']),
      Array.from({ length: 1000 }, (_, i) => i + 1),
    );
    assert.ok(writes[0]!.endsWith('}\n'), 'the last line ends with its newline');

    sink.message(message(2000));
    await nextTurn();
    assert.equal(stdout.writes().length, 2, 'a later turn is a write of its own');
    assert.deepEqual(eventsOf(stdout.writes()[1]!), [{ event: 'message', ...message(2000) }]);
  });

  it('writes every plain line of one turn in one write, in the order they came', async (t) => {
    const { io, stdout } = fakeIo(t);
    const sink = plainConsole(io);
    t.after(() => sink.close());
    for (let seq = 1; seq <= 500; seq++) sink.message(message(seq));
    sink.notice('you are now carol');
    sink.peers([]);
    sink.history([], false);
    sink.peerUp(PEER); // not shown in plain mode

    await nextTurn();
    const writes = stdout.writes();
    assert.equal(writes.length, 1);
    const lines = writes[0]!.split('\n');
    assert.equal(lines.pop(), '', 'ends with a newline');
    assert.equal(lines.length, 503);
    assert.match(lines[0]!, /^\[\d\d:\d\d:\d\d\] bob \(a1b2c3\): line 1$/);
    assert.match(lines[499]!, /: line 500$/);
    assert.deepEqual(lines.slice(500), ['you are now carol', 'no peers connected', 'no history yet']);
  });

  it('writes what stdout has queued before a stderr line, so the two keep their order', async (t) => {
    const { io, journal } = fakeIo(t);
    const sink = jsonConsole(io);
    t.after(() => sink.close());
    sink.message(message(1));
    sink.message(message(2));
    sink.log('info: peer up: bob');
    sink.message(message(3));
    sink.notice('message not sent: too long'); // --json notices go to stderr
    await nextTurn();
    assert.deepEqual(
      journal.map((w) => [w.stream, w.stream === 'stdout' ? eventsOf(w.text).map((e) => e['seq']) : w.text]),
      [
        ['stdout', [1, 2]],
        ['stderr', 'info: peer up: bob\n'],
        ['stdout', [3]],
        ['stderr', 'message not sent: too long\n'],
      ],
    );
  });

  it('writes the queued lines at once on close(), and any later line right away', async (t) => {
    for (const make of [jsonConsole, plainConsole]) {
      const { io, stdout } = fakeIo(t);
      const sink: ConsoleSink = make(io);
      for (let seq = 1; seq <= 3; seq++) sink.message(message(seq));
      sink.close();
      assert.equal(stdout.writes().length, 1, `${make.name}: written by close() itself, not a turn later`);
      assert.equal(stdout.writes()[0]!.split('\n').length, 4);
      sink.message(message(4));
      assert.equal(stdout.writes().length, 2, `${make.name}: after close() nothing waits`);
      await nextTurn();
      assert.equal(stdout.writes().length, 2, `${make.name}: no flush left scheduled`);
    }
  });

  it('writes the queued lines at once on flush() (the exit hook), then batches again', async (t) => {
    const { io, stdout } = fakeIo(t);
    const sink = jsonConsole(io);
    t.after(() => sink.close());
    sink.message(message(1));
    sink.message(message(2));
    sink.flush();
    assert.deepEqual(stdout.writes().map(eventsOf), [
      [
        { event: 'message', ...message(1) },
        { event: 'message', ...message(2) },
      ],
    ]);
    await nextTurn();
    assert.equal(stdout.writes().length, 1, 'nothing left for the end of the turn');
    sink.message(message(3));
    sink.message(message(4));
    assert.equal(stdout.writes().length, 1);
    await nextTurn();
    assert.equal(stdout.writes().length, 2);
  });

  it('draws a burst in a terminal once: the lines in one write, then the prompt', async (t) => {
    const { io, stdout } = fakeIo(t);
    const sink = ttyConsole(io, () => {});
    sink.ready({ id: ID, port: 8001, nick: 'alice' });
    await nextTurn();
    const before = stdout.writes().length;
    for (let seq = 1; seq <= 100; seq++) sink.message(message(seq));
    sink.peerUp(PEER);
    assert.equal(stdout.writes().length, before, 'nothing drawn before the end of the turn');
    await nextTurn();
    const drawn = stdout.writes().slice(before);
    const withLines = drawn.filter((w) => w.includes('line '));
    assert.equal(withLines.length, 1, 'every line in one write');
    const lines = withLines[0]!.split('\n');
    assert.equal(lines.length, 102);
    assert.match(lines[100]!, /^\* bob \(a1b2c3\) joined from 127\.0\.0\.1:8002$/);
    const after = drawn.slice(drawn.indexOf(withLines[0]!) + 1).join('');
    assert.equal(after.replace(CSI, ''), 'alice> ', 'then the prompt, drawn again below them');
    sink.message(message(101));
    sink.close();
    assert.ok(
      stdout.writes().some((w) => w.includes('line 101\n')),
      'close() draws what is queued',
    );
  });
});

/** Columns of the fake terminal: narrow, so a short line wraps. */
const COLUMNS = 20;

/**
 * A terminal for `ttyConsole`, COLUMNS wide: stdin a PassThrough that says it is a TTY (keys are
 * typed into it), stdout and stderr both drawing on one {@link terminal}, as they do on a real one.
 * readline draws only for a TERM other than `dumb`: TERM is set for the test.
 */
function ttyIo(t: TestContext) {
  const screen = terminal(COLUMNS);
  const tty = (): Writable =>
    Object.assign(
      new Writable({
        decodeStrings: false,
        write(chunk: string | Buffer, _encoding, callback) {
          screen.write(chunk);
          callback();
        },
      }),
      { isTTY: true, columns: COLUMNS },
    );
  const stdin = Object.assign(new PassThrough(), { isTTY: true });
  const io: ConsoleIo = { stdin, stdout: tty(), stderr: tty() };
  const term = process.env['TERM'];
  process.env['TERM'] = 'xterm';
  t.after(() => {
    if (term === undefined) delete process.env['TERM'];
    else process.env['TERM'] = term;
    stdin.end();
  });
  return { io, stdin, screen };
}

/** A terminal console that has drawn its ready line and its prompt, `${nick}> `. */
async function readyTty(t: TestContext, nick = 'alice') {
  const { io, stdin, screen } = ttyIo(t);
  const sink = ttyConsole(io, () => {});
  t.after(() => sink.close());
  sink.ready({ id: ID, port: 8001, nick });
  await nextTurn();
  const readyRows = wrapped(
    `p2p: node a1b2c3 (${ID}) listening on port 8001. Type a message, or /help.`,
    COLUMNS,
  );
  assert.deepEqual(
    screen.rows(),
    [...readyRows, ...wrapped(`${nick}> `, COLUMNS)],
    'the ready line and the prompt',
  );
  /** Types `keys` one at a time, a read each, as a person does (an escape sequence is one key). */
  const type = async (...keys: string[]): Promise<void> => {
    for (const key of keys) {
      stdin.write(key);
      await nextTurn();
    }
  };
  /** Pastes `text`: one read. */
  const paste = async (text: string): Promise<void> => {
    stdin.write(text);
    await nextTurn();
  };
  return { sink, screen, type, paste, readyRows };
}

const LEFT = '\x1b[D';
const BACKSPACE = '\x7f';

/**
 * The rows of a prompt and line `text` drawn from row `top`, and the cursor after its `at`-th
 * character. A text that fills its last row has the cursor on a row of its own below (readline
 * writes a space there to have the terminal make that row).
 */
function drawn(text: string, top: number, at = text.length): { rows: string[]; cursor: Cursor } {
  const rows = wrapped(text, COLUMNS);
  if (text.length > 0 && text.length % COLUMNS === 0) rows.push('');
  return { rows, cursor: { row: top + Math.floor(at / COLUMNS), col: at % COLUMNS } };
}

describe('terminal (the spec helper): a screen as xterm draws it', () => {
  it('wraps at its width with the wrap pending in the last column, moves and erases as xterm does', () => {
    const screen = terminal(5);
    screen.write('abcde'); // fills the row: the cursor stays in its last column, a wrap pending
    assert.deepEqual([screen.rows(), screen.cursor], [['abcde'], { row: 0, col: 4 }]);
    screen.write('\r\nfgh'); // the pending wrap is cancelled: one row down, not two
    assert.deepEqual([screen.rows(), screen.cursor], [['abcde', 'fgh'], { row: 1, col: 3 }]);
    screen.write('ijkl\x1b[1A\x1b[3G\x1b[K'); // wraps; then up, to column 3, erase to the end
    assert.deepEqual([screen.rows(), screen.cursor], [['abcde', 'fg', 'kl'], { row: 1, col: 2 }]);
    screen.write('\x1b[2D\x1b[1B\x1b[0J');
    assert.deepEqual([screen.rows(), screen.cursor], [['abcde', 'fg', ''], { row: 2, col: 0 }]);
    assert.throws(() => screen.write('\x1b[2;3H'), /unknown sequence CSI 2;3H/);
  });
});

describe('ttyConsole: after readline closed by itself (the terminal gone, stdin ended)', () => {
  it('still writes what comes and closes, without drawing the prompt again (Node 24 throws ERR_USE_AFTER_CLOSE)', async (t) => {
    const { io, stdin, screen } = ttyIo(t);
    const sink = ttyConsole(io, () => {});
    sink.ready({ id: ID, port: 8001, nick: 'alice' });
    await nextTurn();
    stdin.end(); // readline closes on the end of its input
    await nextTurn();
    sink.sent(message(1));
    sink.notice('one more line');
    sink.log('a log line');
    sink.close();
    // Written as they come: after the prompt left on screen (nothing is drawn again).
    const rows = screen.rows();
    const at = rows.indexOf('alice> one more line');
    assert.deepEqual(rows.slice(at, at + 2), ['alice> one more line', 'a log line'], rows.join('|'));
  });
});

describe('ttyConsole: lines drawn above a prompt and line wrapped over several rows', () => {
  it('draws a message above the half-typed line, then the prompt and the line once, the cursor at its end', async (t) => {
    // 46 characters: 'alice> ' and the line take three rows; 33: two full rows, the cursor on a third.
    const lines = [
      'the quick brown fox jumps over the lazy dog 46',
      'exactly two full rows: 33 chars.',
      'short',
      '',
    ];
    for (const [typed, how] of lines.flatMap((line) => [
      [line, 'typed'] as const,
      [line, 'pasted'] as const,
    ])) {
      const { sink, screen, type, paste, readyRows } = await readyTty(t);
      await (how === 'typed' ? type(...typed) : paste(typed));
      const name = `${how} ${typed.length}`;
      assert.deepEqual(screen.rows(), [...readyRows, ...drawn(`alice> ${typed}`, 0).rows], name);

      sink.message(message(1));
      await nextTurn();
      const above = [...readyRows, ...wrapped(formatMessage(message(1)), COLUMNS)];
      const prompt = drawn(`alice> ${typed}`, above.length);
      assert.deepEqual(screen.rows(), [...above, ...prompt.rows], `${name}: the message, then the line once`);
      assert.deepEqual(screen.cursor, prompt.cursor, `${name}: the cursor where it was in the line`);

      // readline's own redraw (a backspace) starts from the row the console left it on.
      await type(BACKSPACE);
      const after = drawn(`alice> ${typed.slice(0, -1)}`, above.length);
      assert.deepEqual(screen.rows(), [...above, ...after.rows], `${name}: then a backspace`);
      assert.deepEqual(screen.cursor, after.cursor, `${name}: then a backspace`);
    }
  });

  it('puts the cursor back in the middle of the line, on the row it was on', async (t) => {
    const { sink, screen, type, readyRows } = await readyTty(t);
    const typed = 'the quick brown fox jumps over the lazy dog 46';
    await type(...typed, ...Array<string>(COLUMNS + 4).fill(LEFT)); // onto the row above
    const at = 7 + typed.length - COLUMNS - 4;
    assert.deepEqual(screen.cursor, drawn(`alice> ${typed}`, readyRows.length, at).cursor);

    sink.message(message(1));
    await nextTurn();
    const above = [...readyRows, ...wrapped(formatMessage(message(1)), COLUMNS)];
    const prompt = drawn(`alice> ${typed}`, above.length, at);
    assert.deepEqual(screen.rows(), [...above, ...prompt.rows]);
    assert.deepEqual(screen.cursor, prompt.cursor);

    await type('Z'); // inserted in the middle: readline draws the whole line again
    const edited = `alice> ${typed.slice(0, at - 7)}Z${typed.slice(at - 7)}`;
    assert.deepEqual(screen.rows(), [...above, ...drawn(edited, above.length).rows]);
    assert.deepEqual(screen.cursor, drawn(edited, above.length, at + 1).cursor);
  });

  it('draws long messages, several turns of them and a log line (stderr) above it, keeping each whole', async (t) => {
    const { sink, screen, paste, readyRows } = await readyTty(t);
    const typed = 'the quick brown fox jumps over the lazy dog 46';
    await paste(typed);
    const long = { ...message(1), text: 'a message longer than the terminal is wide, by far' };
    sink.message(long);
    sink.message(message(2));
    await nextTurn();
    sink.log('warn: a log line, wider than the terminal');
    sink.message(message(3));
    await nextTurn();
    const above = [
      ...readyRows,
      ...wrapped(formatMessage(long), COLUMNS),
      ...wrapped(formatMessage(message(2)), COLUMNS),
      ...wrapped('warn: a log line, wider than the terminal', COLUMNS),
      ...wrapped(formatMessage(message(3)), COLUMNS),
    ];
    const prompt = drawn(`alice> ${typed}`, above.length);
    assert.deepEqual(screen.rows(), [...above, ...prompt.rows]);
    assert.deepEqual(screen.cursor, prompt.cursor);
  });

  it('draws a new prompt for a blank line entered (nothing sent, nothing else would draw one)', async (t) => {
    const { screen, type, readyRows } = await readyTty(t);
    await type('\r');
    await type(' ', ' ', '\r');
    const prompt = drawn('alice> ', readyRows.length + 2);
    assert.deepEqual(screen.rows(), [...readyRows, 'alice>', 'alice>', ...prompt.rows]);
    assert.deepEqual(screen.cursor, prompt.cursor);
  });

  it('with a prompt wider than the terminal: keeps the line just entered, draws the prompt once below the message', async (t) => {
    const nick = 'a-nickname-of-24-chars__'; // its prompt takes two rows
    const { sink, screen, type, readyRows } = await readyTty(t, nick);
    await type('hello\r'); // entered: readline moves to a new row and draws no prompt until asked
    const entered = wrapped(`${nick}> hello`, COLUMNS);
    assert.deepEqual(screen.rows(), [...readyRows, ...entered, '']);

    sink.message(message(1));
    await nextTurn();
    const above = [...readyRows, ...entered, ...wrapped(formatMessage(message(1)), COLUMNS)];
    const prompt = drawn(`${nick}> `, above.length);
    assert.deepEqual(screen.rows(), [...above, ...prompt.rows]);
    assert.deepEqual(screen.cursor, prompt.cursor);
  });
});

/** The error `fn` throws (it must throw one). */
function thrownBy(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('it threw nothing');
}

describe('ttyConsole: errors on stdin', () => {
  it('leaves as on Ctrl+C on a system error of the terminal (setRawMode or read EIO: the terminal was closed)', (t) => {
    for (const syscall of ['setRawMode', 'read']) {
      const { io, stdin } = ttyIo(t);
      let interrupts = 0;
      const sink = ttyConsole(io, () => interrupts++);
      t.after(() => sink.close());
      // As Node makes it for a failed system call (what the closed-terminal spec in signals.spec sees).
      const eio = Object.assign(new Error(`${syscall} EIO`), { errno: -5, code: 'EIO', syscall });
      stdin.emit('error', eio);
      assert.equal(interrupts, 1, syscall);
    }
  });

  it("rethrows Node's own errors (ERR_* codes: bugs), rather than taking them for the terminal going away", async (t) => {
    const destroyed = new PassThrough();
    destroyed.destroy();
    const notWritten = await new Promise<Error>((resolve) => destroyed.write('x', (err) => resolve(err!)));
    const bugs = [
      thrownBy(() => Buffer.from(5 as unknown as string)),
      thrownBy(() => Buffer.alloc(1).readUInt8(5)),
      notWritten,
    ];
    assert.deepEqual(
      bugs.map((err) => [err.name, (err as NodeJS.ErrnoException).code]),
      [
        ['TypeError', 'ERR_INVALID_ARG_TYPE'],
        ['RangeError', 'ERR_OUT_OF_RANGE'],
        ['Error', 'ERR_STREAM_DESTROYED'],
      ],
    );
    for (const bug of bugs) {
      const { io, stdin } = ttyIo(t);
      let interrupts = 0;
      const sink = ttyConsole(io, () => interrupts++);
      t.after(() => sink.close());
      // Before: any error with a string code made the node leave, exit 0, the bug never seen.
      assert.throws(() => stdin.emit('error', bug), bug);
      assert.equal(interrupts, 0, (bug as NodeJS.ErrnoException).code);
    }
  });
});

describe('ttyConsole with TERM=dumb', () => {
  it('blanks what was typed since Enter (no prompt on its row) by the columns it takes, wide characters two', async (t) => {
    const written: string[] = [];
    const stdout = Object.assign(
      new Writable({
        decodeStrings: false,
        write(chunk: string | Buffer, _encoding, callback) {
          written.push(String(chunk));
          callback();
        },
      }),
      { isTTY: true, columns: COLUMNS },
    );
    const stdin = Object.assign(new PassThrough(), { isTTY: true });
    const term = process.env['TERM'];
    process.env['TERM'] = 'dumb'; // readline reads it as it starts
    const sink = ttyConsole({ stdin, stdout, stderr: stdout }, () => {}, { dumb: true });
    t.after(() => {
      sink.close();
      stdin.end();
      if (term === undefined) delete process.env['TERM'];
      else process.env['TERM'] = term;
    });
    sink.ready({ id: ID, port: 8001, nick: 'alice' });
    await nextTurn();
    stdin.write('/nothing-answers-this\r'); // entered: the prompt is not drawn again until an answer
    await nextTurn();
    stdin.write('你好');
    await nextTurn();
    const mark = written.length;
    sink.message(message(1));
    await nextTurn();
    // Two characters of two columns each, on a row of their own: four spaces (before, two).
    assert.equal(written.slice(mark).join(''), `\r    \r${formatMessage(message(1))}\nalice> 你好`);
  });
});

describe('pipeLines: piped input split as readline splits it', () => {
  /** The lines of `chunks`, written one per turn, as `split` gives them. */
  async function linesOf(chunks: readonly Buffer[], split: 'readline' | 'pipeLines'): Promise<string[]> {
    const input = new PassThrough();
    const lines: string[] = [];
    const done = new Promise<void>((resolve) => {
      if (split === 'readline') {
        const rl = createInterface({ input, terminal: false, crlfDelay: Infinity });
        rl.on('line', (line) => lines.push(line)).on('close', resolve);
      } else {
        pipeLines(input).lines$.subscribe({ next: (line) => lines.push(line), complete: resolve });
      }
    });
    for (const chunk of chunks) {
      input.write(chunk);
      await nextTurn();
    }
    input.end();
    await done;
    return lines;
  }

  it('gives the lines readline gives, whatever the reads (\\r\\n split across two, UTF-8 split, no final newline)', async () => {
    const parts = ['a', 'bc', '\r', '\n', '\r\n', 'é', '€', ' ', '//x'];
    let seed = 1;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let run = 0; run < 300; run += 1) {
      let text = '';
      for (let i = random(16); i > 0; i -= 1) text += parts[random(parts.length)];
      const bytes = Buffer.from(text);
      const chunks: Buffer[] = [];
      for (let at = 0; at < bytes.length;) {
        const size = 1 + random(4);
        chunks.push(bytes.subarray(at, at + size));
        at += size;
      }
      assert.deepEqual(
        await linesOf(chunks, 'pipeLines'),
        await linesOf(chunks, 'readline'),
        JSON.stringify(text),
      );
    }
  });

  it('close() stops reading and completes the lines', async () => {
    const input = new PassThrough();
    const reader = pipeLines(input);
    const lines: string[] = [];
    let completed = false;
    reader.lines$.subscribe({ next: (line) => lines.push(line), complete: () => (completed = true) });
    input.write('one\ntw');
    await nextTurn();
    reader.close();
    input.write('o\nthree\n');
    await nextTurn();
    assert.deepEqual(lines, ['one']);
    assert.equal(completed, true);
    assert.equal(input.listenerCount('data'), 0);
  });

  it('cuts a line longer than MAX_LINE_CHARS as it arrives, so endless input without a line end stays bounded', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'z');
    const chunks = [...Array.from({ length: 40 }, () => chunk), Buffer.from('\nhello\n')]; // 2.6 MB, one line
    const lines = await linesOf(chunks, 'pipeLines');
    assert.deepEqual(
      lines.map((l) => l.length),
      [MAX_LINE_CHARS + 1, 5],
    );
    assert.equal(lines[1], 'hello');
  });

  it('hold(true) stops reading until hold(false); nothing is lost', async () => {
    const input = new PassThrough();
    const reader = pipeLines(input);
    const lines: string[] = [];
    reader.lines$.subscribe((line) => lines.push(line));
    input.write('one\n');
    await nextTurn();
    reader.hold(true);
    input.write('two\nthree\n');
    await nextTurn();
    assert.deepEqual(lines, ['one']);
    reader.hold(false);
    await nextTurn();
    assert.deepEqual(lines, ['one', 'two', 'three']);
  });
});

describe('--json message and sent events: the bytes JSON.stringify gives', () => {
  /** Any UTF-16 string: lone surrogates, pairs, control characters, quotes and backslashes among them. */
  const anyText = fc.string({
    unit: fc.oneof(
      fc.constantFrom(
        '"',
        '\\',
        '\n',
        '\u0000',
        '\u001f',
        '\u007f',
        '\u2028',
        '\ud800',
        '\udc00',
        '\ud83d\ude00',
      ),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
      fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }),
    ),
    maxLength: 80,
  });
  const anyNumber = fc.oneof(fc.maxSafeNat(), fc.integer(), fc.double(), fc.constantFrom(-0, NaN, Infinity));

  it('writes each event as JSON.stringify of its object, for any strings and numbers', async (t) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            id: anyText,
            from: anyText,
            nick: anyText,
            text: anyText,
            ts: anyNumber,
            seq: anyNumber,
          }),
          {
            minLength: 1,
            maxLength: 5,
          },
        ),
        async (messages) => {
          const { io, stdout } = fakeIo(t);
          const sink = jsonConsole(io);
          for (const m of messages) {
            sink.message(m);
            sink.sent(m);
          }
          await nextTurn();
          sink.close();
          const expected = messages.flatMap((m) => [
            JSON.stringify({
              event: 'message',
              id: m.id,
              from: m.from,
              nick: m.nick,
              text: m.text,
              ts: m.ts,
              seq: m.seq,
            }),
            JSON.stringify({ event: 'sent', id: m.id, ts: m.ts, seq: m.seq }),
          ]);
          assert.equal(stdout.writes().join(''), `${expected.join('\n')}\n`);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('lineBatch: bytes', () => {
  it('writes a turn of events that outgrows its buffer several times as JSON.stringify would', async (t) => {
    const { io, stdout } = fakeIo(t);
    const sink = jsonConsole(io);
    const texts = Array.from({ length: 200 }, (_, i) => `${i} "quoted" \\ \n é€😀 ${'x'.repeat(400)}`);
    texts.forEach((text, i) => sink.message({ ...message(i + 1), text }));
    await nextTurn();
    sink.close();
    const expected = texts.map((text, i) => JSON.stringify({ event: 'message', ...message(i + 1), text }));
    assert.equal(stdout.writes().join(''), `${expected.join('\n')}\n`);
    assert.ok(stdout.writes()[0]!.length > 64 * 1024, 'one write of a turn past four times the first buffer');
  });

  it('hands the stream a copy of a small turn, so a chunk it holds keeps at most about its own size', async (t) => {
    const { stdout } = fakeIo(t);
    const batch = lineBatch(stdout.stream);
    for (let turn = 0; turn < 3; turn++) {
      batch.push(`line ${turn}`);
      await nextTurn();
    }
    for (let i = 0; i < 300; i++) batch.push('y'.repeat(100)); // ~30 KB: mostly fills its buffer
    await nextTurn();
    batch.close();
    const chunks = stdout.chunks() as Buffer[];
    assert.equal(chunks.length, 4);
    for (const small of chunks.slice(0, 3)) assert.ok(small.buffer.byteLength <= Buffer.poolSize, 'a copy');
    const large = chunks[3]!;
    assert.ok(large.buffer.byteLength <= 2 * large.length, `${large.buffer.byteLength} for ${large.length}`);
  });

  it("writes long and multi-byte lines whole, however the turn's buffer grows", async (t) => {
    const { stdout } = fakeIo(t);
    const batch = lineBatch(stdout.stream);
    const lines = ['é'.repeat(5000), 'x', '€'.repeat(20_000), '😀'.repeat(3000), ''];
    for (const line of lines) batch.push(line);
    batch.pushBytes(3, (buf, at, text: string) => at + buf.latin1Write(text, at), 'abc');
    await nextTurn();
    assert.deepEqual(stdout.writes(), [`${[...lines, 'abc'].join('\n')}\n`]);
    batch.close();
  });

  it('throws a RangeError when a fill writes past the room it asked for, and queues nothing of it', async (t) => {
    const { stdout } = fakeIo(t);
    const batch = lineBatch(stdout.stream);
    batch.push('before');
    assert.throws(
      () => batch.pushBytes(2, (buf, at, text: string) => at + buf.latin1Write(text, at), 'abc'),
      RangeError,
    );
    assert.equal(batch.queued, 1);
    batch.push('after');
    await nextTurn();
    assert.deepEqual(stdout.writes(), ['before\nafter\n']);
    batch.close();
  });
});

describe('lineBatch: backpressure', () => {
  it('while the stream wants a drain, keeps lines back and writes them in one write once it drains', async (t) => {
    const { stdout, journal } = fakeIo(t, 64);
    const batch = lineBatch(stdout.stream);
    stdout.slow();
    batch.push('x'.repeat(100)); // past the high-water mark: the stream asks for a drain
    await nextTurn();
    assert.equal(stdout.writes().length, 1);
    assert.equal(stdout.stream.writableNeedDrain, true);

    for (let turn = 0; turn < 5; turn++) {
      for (let i = 0; i < 20; i++) batch.push(`${turn}.${i}`);
      await nextTurn();
    }
    assert.equal(stdout.writes().length, 1, 'nothing more is handed to a stream that wants a drain');
    assert.equal(batch.queued, 100);

    stdout.release();
    await nextTurn();
    await nextTurn();
    const writes = stdout.writes();
    assert.equal(writes.length, 2, 'one write once it drains');
    const expected = Array.from({ length: 5 }, (_, turn) =>
      Array.from({ length: 20 }, (_, i) => `${turn}.${i}`),
    );
    assert.equal(writes[1], `${expected.flat().join('\n')}\n`);
    assert.equal(batch.queued, 0);
    assert.equal(
      journal.map((w) => w.text).join(''),
      writes.join(''),
      'everything reached the stream, in order',
    );
    batch.close();
  });

  it('close() hands the stream what is queued even while it wants a drain, so nothing is lost', async (t) => {
    const { stdout } = fakeIo(t, 64);
    const batch = lineBatch(stdout.stream);
    stdout.slow();
    batch.push('x'.repeat(100));
    await nextTurn();
    batch.push('a');
    batch.push('b');
    await nextTurn();
    assert.equal(stdout.writes().length, 1);
    batch.close();
    assert.deepEqual(stdout.writes().slice(1), ['a\nb\n']);
    assert.equal(stdout.stream.listenerCount('drain'), 0, 'stops waiting for the drain');
    stdout.release();
  });

  it('stops waiting when the stream is destroyed, rather than queueing for ever', async (t) => {
    const { stdout } = fakeIo(t, 64);
    stdout.stream.on('error', () => {}); // writes to a destroyed stream fail, as they did unbatched
    const batch = lineBatch(stdout.stream);
    stdout.slow();
    batch.push('x'.repeat(100));
    await nextTurn();
    batch.push('a');
    stdout.stream.destroy();
    await once(stdout.stream, 'close');
    await nextTurn();
    assert.equal(batch.queued, 0);
    batch.close();
  });
});

/**
 * `main` with `--json` on fake streams, up to its ready event; stopped (SIGTERM) after the test
 * however it ends, so a failed assertion never leaves a node running.
 */
async function startMain(t: TestContext, env: NodeJS.ProcessEnv = {}, extra: readonly string[] = []) {
  const { io, stdin, stdout, stderr } = fakeIo(t);
  const signals = new EventEmitter();
  const args = ['0', '--host', '127.0.0.1', '--json', '--log-level', 'error', ...extra];
  const code = main(args, { ...io, env, signals });
  // A second SIGTERM after main is done reaches no listener.
  t.after(async () => {
    signals.emit('SIGTERM');
    await code;
  });
  await waitFor(() => stdout.writes().some((w) => w.includes('"ready"')), 'the ready event', 8_000);
  return { stdin, stdout, stderr, signals, code };
}

describe('main: output still queued at exit', () => {
  it("writes the queued lines from the process 'exit' hook", async (t) => {
    const { stdin, stdout, signals, code } = await startMain(t);
    const atExit: string[][] = [];
    // After the console's own 'data' listener: the /peers reply is queued, the turn not over.
    stdin.on('data', () => {
      const before = stdout.writes().length;
      signals.emit('exit', 1);
      atExit.push(stdout.writes().slice(before));
    });
    const handled = once(stdin, 'data');
    stdin.write('/peers\n');
    await handled;
    assert.deepEqual(
      atExit.map((writes) => writes.flatMap(eventsOf)),
      [[{ event: 'peers', peers: [] }]],
    );
    signals.emit('SIGTERM');
    assert.equal(await code, 0);
    assert.equal(signals.listenerCount('exit'), 0, 'the hook is removed once main is done');
  });
});

describe('main: a line too long to send', () => {
  it('says how long it was, or that it was longer than a line is read (then cut)', async (t) => {
    const { stdin, stdout, stderr } = await startMain(t);
    // The second and third end in a later read than they start: they are cut as they are read. The
    // third starts with // (sent as a line starting with /): one character less once unescaped.
    stdin.write(`${'x'.repeat(20_000)}\n${'y'.repeat(100_000)}`);
    await delay(20);
    stdin.write(`\n//${'z'.repeat(100_000)}`);
    await delay(20);
    stdin.write('\n');
    const notices = (): string[] => stderr.writes().filter((w) => w.includes('message not sent'));
    await waitFor(() => notices().length === 3, 'three notices');
    assert.deepEqual(notices(), [
      `message not sent: 20000 characters, the limit is ${MAX_TEXT_LENGTH}\n`,
      `message not sent: more than ${MAX_LINE_CHARS} characters, the limit is ${MAX_TEXT_LENGTH}\n`,
      `message not sent: more than ${MAX_LINE_CHARS} characters, the limit is ${MAX_TEXT_LENGTH}\n`,
    ]);
    assert.ok(!stdout.writes().some((w) => w.includes('"sent"')), 'neither was sent');
  });
});

describe('main: /connect', () => {
  it('at --max-peers says it does not dial now, and that it dials once a peer leaves', async (t) => {
    const { stdin, stdout, stderr } = await startMain(t, {}, ['--max-peers', '1']);
    const ready = stdout
      .writes()
      .flatMap(eventsOf)
      .find((e) => e['event'] === 'ready');
    await rawPeer(t, Number(ready!['port']));
    await waitFor(() => stdout.writes().some((w) => w.includes('"peer-up"')), 'the peer-up');
    stdin.write('/connect 127.0.0.1:1\n');
    const notice = 'not dialling 127.0.0.1:1 now: already at --max-peers; it is dialled once a peer leaves\n';
    await waitFor(() => stderr.writes().includes(notice), 'the notice');
    assert.ok(!stderr.writes().includes('dialling 127.0.0.1:1\n'), 'not said to be dialling');
  });
});

describe('main: stdout not a terminal', () => {
  /** main with stdin a terminal and stdout a pipe, once it listens; stopped after the test. */
  async function startTtyIn(t: TestContext, extra: string[]) {
    const { io, stdin, stdout, stderr } = fakeIo(t);
    const signals = new EventEmitter();
    const code = main(['0', '--host', '127.0.0.1', ...extra, '--log-level', 'error'], {
      ...io,
      stdin: Object.assign(stdin, { isTTY: true }),
      env: {},
      signals,
    });
    t.after(async () => {
      signals.emit('SIGTERM');
      await code;
    });
    await waitFor(
      () => stderr.writes().some((w) => w.includes('listening on port')),
      'the ready line',
      8_000,
    );
    return { stdin, stdout, signals, code };
  }

  it('with stdin a terminal and stdout a pipe, writes plain lines: no prompt, no escapes', async (t) => {
    const { stdin, stdout, signals, code } = await startTtyIn(t, ['--nick', 'alice']);
    stdin.write('/peers\n/nick bob\n');
    await waitFor(() => stdout.writes().join('').includes('bob'), 'the replies');
    signals.emit('SIGTERM');
    assert.equal(await code, 0);
    assert.equal(stdout.writes().join(''), 'no peers connected\nyou are now bob\n');
  });

  it('/nick takes the rest of the line as typed, trimmed, its inner spaces kept', async (t) => {
    const { stdin, stdout, signals, code } = await startTtyIn(t, ['--nick', 'alice']);
    stdin.write('/nick   Mary  Ann  \n/nick a\tb\n');
    await waitFor(() => stdout.writes().join('').split('\n').length > 2, 'the two replies');
    signals.emit('SIGTERM');
    assert.equal(await code, 0);
    const [renamed, refused] = stdout.writes().join('').split('\n');
    assert.equal(renamed, 'you are now Mary  Ann');
    // A tab is a control character: refused, not turned into a space.
    assert.match(refused!, /^\/nick: nickname must be/);
  });

  it('with stdin a terminal and stdout a pipe, leaves with exit 0 at the end of input (Ctrl+D), as /help says', async (t) => {
    const { stdin, code } = await startTtyIn(t, []);
    stdin.end();
    const ended = await Promise.race([code, delay(3_000).then(() => 'still running')]);
    assert.equal(ended, 0);
  });
});

describe('main: the default nick', () => {
  it('cuts $USER to 32 UTF-16 units between characters, never inside an emoji, and sends with it', async (t) => {
    // 33 units: the emoji's two would pass the limit.
    const { stdin, stdout, signals, code } = await startMain(t, { USER: `${'a'.repeat(31)}\u{1F600}` });
    const events = (): Record<string, unknown>[] => stdout.writes().flatMap(eventsOf);
    assert.equal(events().find((e) => e['event'] === 'ready')!['nick'], 'a'.repeat(31));
    stdin.write('hello\n');
    await waitFor(() => events().some((e) => e['event'] === 'sent'), 'the sent event');
    signals.emit('SIGTERM');
    assert.equal(await code, 0);
  });
});

describe('bin/p2p output at exit', () => {
  it('exits only once a slow reader has taken everything it printed', async (t) => {
    const procs = procsFor(t);
    const node = await procs.node();
    const stdout = node.child.stdout!;
    stdout.pause(); // the reader falls behind: the pipe and the node's stdout buffer fill up
    const count = 2_000; // about 140 KB of `sent` events, more than a pipe holds (64 KiB)
    node.write(`${Array.from({ length: count }, (_, i) => `burst ${i + 1}`).join('\n')}\n/quit\n`);
    // Before this, the node exited as soon as /quit was handled, and what the pipe had no room for was lost.
    await Promise.race([once(node.child, 'exit'), delay(1_000)]);
    stdout.resume();
    assert.deepEqual(await node.waitForExit(), { code: 0, signal: null });
    const sent = node.events.filter((e: CliEvent): e is SentEvent & { seq: number } => e.event === 'sent');
    assert.equal(sent.length, count, 'every sent event reached the reader');
    assert.deepEqual(
      sent.map((e) => e.seq),
      Array.from({ length: count }, (_, i) => i + 1),
    );
  });

  it('leaves cleanly, exit 0, when the reader of its stdout goes away (as `| head -1` does)', async (t) => {
    const procs = procsFor(t);
    const node = await procs.node();
    node.child.stdout!.destroy(); // the pipe's reading end closes: the next write fails with EPIPE
    node.write('anyone there?\n'); // its `sent` event is that write
    assert.deepEqual(await node.waitForExit(), { code: 0, signal: null });
    assert.doesNotMatch(node.stderrLines.join('\n'), /EPIPE|^\s+at /m, 'no error, no stack trace');
  });

  it('leaves cleanly, exit 0, when the reader of its stderr goes away (as `2>&1 | head -1` does)', async (t) => {
    const procs = procsFor(t);
    const node = await procs.node();
    node.child.stderr!.destroy();
    node.write(`${'x'.repeat(20_000)}\n`); // too long: its notice goes to stderr, and fails there
    assert.deepEqual(await node.waitForExit(), { code: 0, signal: null });
  });
});

describe('bin/p2p: the start-up line', () => {
  it('says once that it listens: one stderr line in a pipe at the default log level (info), none besides the ready event with --json', async (t) => {
    const procs = procsFor(t);
    const plain = procs.spawn(['0', '--host', '127.0.0.1'], { json: false });
    const json = procs.spawn(['0', '--host', '127.0.0.1', '--json']);
    await plain.waitForStderr(/listening on port/);
    await json.waitForEvent((e) => e.event === 'ready');
    // A reply from each: whatever they printed at start is out by now.
    plain.send('/peers');
    json.send('/peers');
    await plain.waitForStdout(/no peers connected/);
    await json.waitForEvent((e) => (e as { event: string }).event === 'peers');
    // Before: `info: listening on port P as ID (nick)` from the node, then the CLI's own line.
    const lines = plain.stderrLines.filter((line) => line.includes('listening'));
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /^p2p: node [0-9a-f]{32} listening on port \d+$/);
    assert.deepEqual(
      json.stderrLines.filter((line) => line.includes('listening')),
      [],
    );
  });
});
