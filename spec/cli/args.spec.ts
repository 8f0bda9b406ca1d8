import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseArgs, UsageError } from '../../lib/cli/args.js';
import { MAX_HISTORY_MESSAGES } from '../../lib/store/message-store.js';
import { freePorts, procsFor, ROOT, runCli } from '../helpers/procs.js';

const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };
const USAGE_LINE = /^usage: p2p <port> \[host:port \.\.\.\] \[options\]$/m;
const STACK_LINE = /^\s+at /m;

/** The usage error's message for `argv`; fails the test if it is accepted. */
function refusal(argv: string[]): string {
  try {
    parseArgs(argv);
  } catch (err) {
    assert.ok(err instanceof UsageError, String(err));
    return err.message;
  }
  assert.fail(`${JSON.stringify(argv)} was accepted`);
}

describe('bin/p2p: command line', () => {
  it('prints the usage on stdout and exits 0 for --help and -h', async () => {
    for (const flag of ['--help', '-h']) {
      const run = await runCli([flag]);
      assert.equal(run.code, 0, flag);
      assert.match(run.stdout, USAGE_LINE);
      assert.match(run.stdout, /--json/);
      assert.equal(run.stderr, '');
    }
  });

  it('prints the package.json version and exits 0 for --version and -v', async () => {
    for (const flag of ['--version', '-v']) {
      const run = await runCli([flag]);
      assert.equal(run.code, 0, flag);
      assert.equal(run.stdout.trim(), `p2p ${pkg.version}`);
      assert.equal(run.stderr, '');
    }
  });

  const usageErrors: ReadonlyArray<{ name: string; args: string[]; mentions: RegExp }> = [
    { name: 'a port out of range', args: ['70000'], mentions: /70000/ },
    { name: 'a port that is not a number', args: ['abc'], mentions: /abc/ },
    { name: 'a peer without a port', args: ['0', 'nohost'], mentions: /nohost/ },
    // The message says `port "" is not a number` without naming the argument; enough to act on.
    { name: 'a peer with an empty port', args: ['0', '1.2.3.4:'], mentions: /port/ },
    { name: 'an IPv6 peer without brackets', args: ['0', '::1:80'], mentions: /\[/ },
    { name: 'an unknown option', args: ['0', '--bogus'], mentions: /--bogus/ },
    { name: 'a --no- form of an option', args: ['0', '--no-json'], mentions: /unknown option --no-json/ },
    { name: 'a flag given a value', args: ['0', '--json=false'], mentions: /--json takes no value/ },
    { name: 'no port at all', args: [], mentions: /port/ },
    { name: 'options but no port', args: ['--json'], mentions: /port/ },
    // Number-like but not a port as typed (the parser's library made numbers of them: 8001 and 1000).
    { name: 'a port in hexadecimal', args: ['0x1f41'], mentions: /0x1f41/ },
    { name: 'a port in exponent notation', args: ['1e3'], mentions: /1e3/ },
    {
      name: 'a --history over its cap',
      args: ['0', '--history', '1000001'],
      mentions: /--history: .*1000001/,
    },
  ];
  for (const { name, args, mentions } of usageErrors) {
    it(`exits 2 with a message and the usage on stderr for ${name}`, async () => {
      const run = await runCli(args);
      assert.equal(run.code, 2, `exit code for ${JSON.stringify(args)}; stderr: ${run.stderr}`);
      assert.equal(run.stdout, '', 'nothing on stdout');
      const [first = ''] = run.stderr.split('\n');
      assert.match(first, /^p2p: /, 'a one-line message first');
      assert.match(first, mentions, 'the message names what is wrong');
      assert.match(run.stderr, USAGE_LINE, 'then the usage');
      assert.doesNotMatch(run.stderr, STACK_LINE, 'no stack trace');
    });
  }

  it('accepts [::1]:PORT and localhost:PORT peers', async (t) => {
    const procs = procsFor(t);
    const [port] = (await freePorts(1)) as [number];
    const node = await procs.node({ peers: [`[::1]:${port}`, `localhost:${port}`], nick: 'v6' });
    assert.equal(typeof node.ready.port, 'number');
    assert.ok(node.ready.port > 0);
    assert.doesNotMatch(node.stderr, USAGE_LINE);
    assert.equal(node.exit, undefined, 'still running');
  });

  it('connects a node whose nickname is 32 CJK characters: its hello (larger than a handshake message) is read after the handshake that came with it', async (t) => {
    // 96 bytes of nickname make a hello of ~210 bytes, sent in the same write as the handshake's last
    // message; read in one chunk, it was checked against the handshake's limit and the link refused.
    const procs = procsFor(t);
    const nick = '中'.repeat(32);
    const listener = await procs.node({ nick: 'listener' });
    const dialer = await procs.node({ nick, peers: [`127.0.0.1:${listener.ready.port}`] });
    const up = await listener.waitForPeerUp(dialer.ready.id);
    assert.equal(up.nick, nick);
    await dialer.waitForPeerUp(listener.ready.id);
    dialer.send('你好');
    const message = await listener.waitForMessage('你好');
    assert.equal(message.nick, nick);
    assert.doesNotMatch(listener.stderr + dialer.stderr, /ERR_FRAME_TOO_LARGE/);
  });

  it('exits 1 with a one-line explanation when the port is already in use', async (t) => {
    const squatter = createServer();
    t.after(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    await new Promise<void>((resolve, reject) => {
      squatter.once('error', reject);
      squatter.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = squatter.address() as AddressInfo;

    const run = await runCli([String(port), '--host', '127.0.0.1', '--json']);
    assert.equal(run.code, 1, `stderr: ${run.stderr}`);
    assert.equal(run.stdout, '', 'no ready event');
    const lines = run.stderr.split('\n').filter((line) => line.length > 0);
    assert.equal(lines.length, 1, `one line on stderr, got:\n${run.stderr}`);
    assert.match(lines[0]!, /^p2p: /);
    assert.match(lines[0]!, new RegExp(`${port}`));
    assert.match(lines[0]!, /in use/);
    assert.doesNotMatch(run.stderr, STACK_LINE, 'no stack trace');
  });

  it('run twice on one port, says the port is taken by the other node: not to give a --data-dir, which then fails on the port', async (t) => {
    const procs = procsFor(t);
    const [port] = await freePorts(1);
    // The default data directory, as a user who starts the same command twice has it.
    const first = await procs.node({ port: port!, nick: 'first' });
    const run = await runCli([String(port), '--host', '127.0.0.1', '--json']);
    assert.equal(run.code, 1, `stderr: ${run.stderr}`);
    assert.equal(run.stdout, '', 'no ready event');
    const lines = run.stderr.split('\n').filter((line) => line.length > 0);
    assert.equal(lines.length, 1, `one line on stderr, got:\n${run.stderr}`);
    assert.match(
      lines[0]!,
      new RegExp(`^p2p: .*another node \\(pid ${first.pid}\\) runs on port ${port}\\b`),
    );
    assert.match(lines[0]!, /pick another port/);
    assert.doesNotMatch(lines[0]!, /--data-dir|--ephemeral/);
    assert.equal(first.exit, undefined, 'the first node goes on');
  });
});

describe('parseArgs: options', () => {
  it('refuses --_ as any other unknown option (minimist keeps the positionals under _)', () => {
    for (const argv of [
      ['--_', '8001'],
      ['8001', '--_=127.0.0.1:8002'],
      ['8001', '--_'],
    ]) {
      assert.throws(
        () => parseArgs(argv),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, String(err));
          assert.equal(err.message, 'unknown option --_');
          return true;
        },
      );
    }
  });
});

describe('parseArgs: --no- forms', () => {
  it('refuses --no- followed by any name as an unknown option, instead of reading it as that option set to false', () => {
    const negated = [
      '--no-json',
      '--no-ephemeral',
      '--no-nick',
      '--no-help',
      '--no-version',
      '--no-history',
      '--no-data-dir',
      '--no-bogus',
      '--no-',
    ];
    for (const flag of negated) {
      for (const argv of [
        ['8001', flag],
        ['8001', `${flag}=1`],
        [flag, '8001', '--json'],
      ]) {
        assert.throws(
          () => parseArgs(argv),
          (err: unknown) => {
            assert.ok(err instanceof UsageError, String(err));
            assert.equal(err.message, `unknown option ${flag}`, JSON.stringify(argv));
            return true;
          },
        );
      }
    }
  });

  it('leaves one after -- to be read as a positional (and refused as a peer)', () => {
    assert.throws(() => parseArgs(['8001', '--', '--no-json']), /peer: "--no-json"/);
  });
});

describe('parseArgs: flags given a value', () => {
  const takesNoValue = (flag: string, given: string): string =>
    `${flag} takes no value, got ${JSON.stringify(given)}: give it alone, or leave it out`;

  it('refuses a flag with =, whatever the value (true and false too)', () => {
    for (const flag of ['--json', '--ephemeral', '--help', '--version']) {
      for (const value of ['yes', 'no', '1', '0', 'true', 'false', '']) {
        const given = `${flag}=${value}`;
        assert.equal(refusal(['8001', given]), takesNoValue(flag, given));
        assert.equal(refusal([given, '8001']), takesNoValue(flag, given));
      }
    }
  });

  it('refuses a flag followed by true or false, which minimist took as its value', () => {
    assert.equal(refusal(['8001', '--json', 'false']), takesNoValue('--json', '--json false'));
    assert.equal(refusal(['8001', '--ephemeral', 'true']), takesNoValue('--ephemeral', '--ephemeral true'));
    assert.equal(refusal(['--help', 'false', '8001']), takesNoValue('--help', '--help false'));
    assert.equal(refusal(['8001', '-v', 'false']), takesNoValue('-v', '-v false'));
    assert.equal(refusal(['8001', '-hv', 'true']), takesNoValue('-v', '-hv true'));
  });

  it('refuses -h and -v with anything after them, and a group of letters with an unknown one in it', () => {
    assert.equal(refusal(['8001', '-h=1']), takesNoValue('-h', '-h=1'));
    assert.equal(refusal(['8001', '-h1']), takesNoValue('-h', '-h1'));
    assert.equal(refusal(['8001', '-v=no']), takesNoValue('-v', '-v=no'));
    assert.equal(refusal(['8001', '-hv=1']), takesNoValue('-v', '-hv=1'));
    // minimist set -h to "x=1" here: no help, and the node ran.
    assert.equal(refusal(['8001', '-hx=1']), 'unknown option -hx');
    assert.equal(refusal(['8001', '-x=1']), 'unknown option -x');
  });

  it('still takes a flag alone, true and false as the values of options that take one, and anything after --', () => {
    const run = parseArgs(['8001', '--json', '--ephemeral', '--nick', 'true']);
    assert.equal(run.kind, 'run');
    if (run.kind === 'run') {
      assert.equal(run.options.json, true);
      assert.equal(run.options.ephemeral, true);
      assert.equal(run.options.nick, 'true');
    }
    assert.equal(parseArgs(['8001', '-hv']).kind, 'help');
    assert.equal(parseArgs(['-vh']).kind, 'help');
    assert.match(refusal(['8001', '--', '--json=1']), /^peer: "--json=1"/);
  });
});

describe('parseArgs: --nick', () => {
  const nickOf = (nick: string): string | undefined => {
    const parsed = parseArgs(['8001', '--nick', nick]);
    return parsed.kind === 'run' ? parsed.options.nick : undefined;
  };
  const refusal = (nick: string): string => {
    try {
      parseArgs(['8001', `--nick=${nick}`]);
    } catch (err) {
      assert.ok(err instanceof UsageError, String(err));
      return err.message;
    }
    assert.fail(`${JSON.stringify(nick)} was accepted`);
  };

  it('takes up to 32 UTF-16 code units: 32 letters, 16 emoji', () => {
    for (const nick of [
      'a',
      'a'.repeat(32),
      'é'.repeat(32),
      '中'.repeat(32),
      '😀'.repeat(16),
      `${'a'.repeat(30)}😀`,
    ])
      assert.equal(nickOf(nick), nick);
  });

  it('refuses more than 32 code units, saying they are UTF-16 code units and how many were given', () => {
    for (const [nick, units] of [
      ['a'.repeat(33), 33],
      ['😀'.repeat(17), 34],
      [`${'a'.repeat(31)}😀`, 33],
    ] as const) {
      assert.equal(
        refusal(nick),
        `--nick: 1-32 UTF-16 code units (32 letters of most scripts, fewer for emoji), got ${units}`,
      );
    }
    assert.match(refusal(''), /^--nick: 1-32 UTF-16 code units .*, got 0$/);
  });

  it('refuses a lone surrogate, which the node would refuse at start, and a control character', () => {
    for (const nick of [
      '\ud800',
      'a\udc00b',
      `bob${'😀'.slice(0, 1)}`,
      '😀'.slice(1),
      'a\u0007',
      'a\nb',
      '\u007f',
    ]) {
      assert.equal(
        refusal(nick),
        '--nick: a name without control characters or lone surrogates',
        JSON.stringify(nick),
      );
    }
  });
});

describe('parseArgs: --history', () => {
  it(`takes 1..${MAX_HISTORY_MESSAGES} messages, and refuses more`, () => {
    const history = (text: string): number | undefined => {
      const parsed = parseArgs(['8001', '--history', text]);
      return parsed.kind === 'run' ? parsed.options.historyMessages : undefined;
    };
    assert.equal(history('1'), 1);
    assert.equal(history(String(MAX_HISTORY_MESSAGES)), MAX_HISTORY_MESSAGES);
    assert.equal(MAX_HISTORY_MESSAGES, 1_000_000);
    for (const text of ['0', '1000001', '10000000']) {
      assert.equal(
        refusal(['8001', '--history', text]),
        `--history: expected a number of messages in 1..1000000, got "${text}"`,
      );
    }
  });
});

describe('parseArgs: --history-age', () => {
  const ageOf = (text: string): number | undefined => {
    const parsed = parseArgs(['8001', '--history-age', text]);
    return parsed.kind === 'run' ? parsed.options.historyAgeMs : undefined;
  };

  it('takes a duration up to 100 years, in milliseconds', () => {
    assert.equal(ageOf('600s'), 600_000);
    assert.equal(ageOf('10m'), 600_000);
    assert.equal(ageOf('7d'), 7 * 86_400_000);
    assert.equal(ageOf('999999s'), 999_999_000);
    assert.equal(ageOf('999999m'), 999_999 * 60_000);
    assert.equal(ageOf('36525d'), 3_155_760_000_000);
    assert.equal(ageOf('876600h'), 3_155_760_000_000);
  });

  it('refuses one longer than 100 years (999999d was 8.6e16 ms: past the safe integers and the range of a Date)', () => {
    for (const text of ['36526d', '876601h', '999999h', '999999d']) {
      assert.throws(
        () => ageOf(text),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, String(err));
          assert.equal(err.message, `--history-age: at most 36525d (100 years), got "${text}"`);
          return true;
        },
      );
    }
  });

  it('refuses one under 10 minutes: the age also refuses older messages, so a short one dropped live messages of a peer whose clock lags', () => {
    for (const text of ['1s', '90s', '599s', '9m']) {
      assert.throws(
        () => ageOf(text),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, String(err));
          assert.match(err.message, new RegExp(`^--history-age: at least 10m, got "${text}" \\(`));
          assert.match(err.message, /--history N/);
          return true;
        },
        text,
      );
    }
  });

  it('still refuses what is not a duration, and zero', () => {
    for (const text of ['0d', '7', '7w', '1.5h', '1000000s', '']) {
      assert.throws(
        () => ageOf(text),
        /^UsageError: --history-age: expected a duration/,
        JSON.stringify(text),
      );
    }
  });
});

describe('parseArgs: values that start with a dash and a digit', () => {
  const options = (argv: string[]): Record<string, unknown> => {
    const parsed = parseArgs(argv);
    assert.equal(parsed.kind, 'run');
    return parsed.kind === 'run' ? { ...parsed.options } : {};
  };

  it('takes one after an option that takes a value as that value, as with =', () => {
    assert.equal(options(['8001', '--nick', '-1'])['nick'], '-1');
    assert.deepEqual(options(['8001', '--nick', '-1', '--json']), options(['8001', '--nick=-1', '--json']));
    assert.equal(options(['8001', '--nick', '-1', '--json'])['json'], true);
    assert.match(
      refusal(['8001', '--max-peers', '-1']),
      /^--max-peers: expected a number in 1\.\.1024, got "-1"$/,
    );
    assert.match(refusal(['8001', '--history', '-5']), /^--history: /);
  });

  it('still refuses one anywhere else, and a value of an option that takes none', () => {
    assert.match(refusal(['-1']), /-1: expected a port or count, not a negative number/);
    assert.match(refusal(['8001', '--json', '-1']), /-1: expected a port/);
    assert.match(refusal(['8001', '--nick', 'bob', '-1']), /-1: expected a port/);
  });
});

describe('parseArgs: the port', () => {
  it('takes exactly the decimal numbers 0-65535 as typed, and refuses anything else with a UsageError (property)', () => {
    const portLike = fc.oneof(
      fc.integer({ min: 0, max: 70_000 }).map(String),
      fc.constantFrom('0x1f41', '80.0e2', '1e3', '.5e4', '8001.0', '+8001', '08001', ' 8001', '8001 ', ''),
      fc.string({ maxLength: 8 }).filter((text) => !text.startsWith('-')),
    );
    fc.assert(
      fc.property(portLike, (text) => {
        const valid = /^\d{1,5}$/.test(text) && Number(text) <= 65_535;
        if (valid) {
          const parsed = parseArgs([text]);
          assert.equal(parsed.kind === 'run' ? parsed.options.port : undefined, Number(text));
        } else assert.throws(() => parseArgs([text]), UsageError, JSON.stringify(text));
      }),
      { numRuns: 1000 },
    );
  });
});
