import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { after, describe, it, type TestContext } from 'node:test';
import {
  NETWORK_KEY_BYTES,
  NETWORK_KEY_HEADER,
  networkFingerprint,
  parseNetworkKey,
} from '../../lib/security/network-key.js';
import { waitFor } from '../helpers/nodes.js';
import { isPeerUp, procsFor, runCli, WAIT_MS } from '../helpers/procs.js';

const HOST = '127.0.0.1';

/** A private temporary directory (mode 0700, as mkdtemp makes it), removed after this file. */
const dir = mkdtempSync(join(tmpdir(), 'p2p-network-key-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshPath = (): string => join(dir, `net-${++files}.key`);

/** Creates a network key file through the CLI, as a user would. */
async function createKey(): Promise<string> {
  const path = freshPath();
  const run = await runCli(['--create-network-key', path]);
  assert.equal(run.code, 0, run.stderr);
  return path;
}

const keyed = (path: string): string[] => ['--network-key', path];

/**
 * A TCP proxy on 127.0.0.1 in front of `targetPort`: a node that dials it reaches the target, and
 * every byte that passes, each way, is kept. With `once`, it stops listening after its first
 * connection, so later dials are refused by the kernel and never reach the target.
 */
interface Tap {
  readonly port: number;
  /** Bytes from the dialling side to the target, and back. */
  readonly up: Buffer[];
  readonly down: Buffer[];
  /** Local port of each connection the tap opened to the target: how the target names it in logs. */
  readonly upstreamPorts: number[];
  /** Proxied connections not yet closed on both ends. */
  open(): number;
  accepted(): number;
  /** Every byte that passed, both ways. */
  bytes(): Buffer;
}

async function tap(t: TestContext, targetPort: number, once = false): Promise<Tap> {
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  const upstreamPorts: number[] = [];
  const sockets = new Set<Socket>();
  let accepted = 0;
  let open = 0;
  let listening = true;
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    accepted++;
    if (once && listening) {
      listening = false;
      server.close();
    }
    open++;
    const upstream = connect({ host: HOST, port: targetPort });
    track(client);
    track(upstream);
    let closedEnds = 0;
    const onClose = (): void => {
      if (++closedEnds === 2) open--;
    };
    client.once('close', onClose);
    upstream.once('close', onClose);
    upstream.once('connect', () => upstreamPorts.push(upstream.localPort!));
    client.on('data', (chunk: Buffer) => up.push(chunk));
    upstream.on('data', (chunk: Buffer) => down.push(chunk));
    // A clean end is passed on as a clean end (pipe), a reset as a close.
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const { port } = server.address() as AddressInfo;
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    if (listening) await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    port,
    up,
    down,
    upstreamPorts,
    open: () => open,
    accepted: () => accepted,
    bytes: () => Buffer.concat([...up, ...down]),
  };
}

describe('bin/p2p --create-network-key', () => {
  it('creates a key file only its owner can read, in a private directory, and never overwrites it', async () => {
    const path = join(dir, 'new-dir', 'net.key');
    const run = await runCli(['--create-network-key', path]);
    assert.equal(run.code, 0, run.stderr);

    assert.equal(statSync(path).mode & 0o777, 0o600, 'the key file is 0600');
    assert.equal(statSync(join(dir, 'new-dir')).mode & 0o777, 0o700, 'a missing directory is made 0700');
    const text = readFileSync(path, 'utf8');
    assert.equal(text.split('\n')[0], NETWORK_KEY_HEADER);
    const key = parseNetworkKey(text, path);
    assert.equal(key.length, NETWORK_KEY_BYTES);
    assert.ok(
      run.stdout.includes(`created network key ${path} (fingerprint ${networkFingerprint(key)})`),
      run.stdout,
    );
    assert.doesNotMatch(
      run.stdout + run.stderr,
      new RegExp(key.toString('hex'), 'i'),
      'the key is not printed',
    );

    const again = await runCli(['--create-network-key', path]);
    assert.equal(again.code, 1, 'a second run fails');
    assert.match(again.stderr, /exists already; it is never overwritten/);
    assert.equal(again.stdout, '');
    assert.equal(readFileSync(path, 'utf8'), text, 'the key is unchanged');
    assert.equal(statSync(path).mode & 0o777, 0o600);
  });

  it('exits 1 with one line naming the file when the file system refuses it (a path under a regular file)', async () => {
    const file = freshPath();
    writeFileSync(file, 'not a directory\n', { mode: 0o600 });
    const path = join(file, 'net.key');
    const run = await runCli(['--create-network-key', path]);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stdout, '');
    assert.match(run.stderr, /^p2p: cannot create .*net\.key: E[A-Z]+: .*\n$/);
    assert.doesNotMatch(run.stderr, /\n {4}at /, 'no stack trace');
  });

  it('gives two runs two different keys', async () => {
    const [a, b] = [await createKey(), await createKey()];
    assert.notDeepEqual(parseNetworkKey(readFileSync(a, 'utf8')), parseNetworkKey(readFileSync(b, 'utf8')));
  });
});

describe('bin/p2p --network-key', () => {
  it('refuses to start with a key file others can read, or one that does not exist', async () => {
    const path = await createKey();
    chmodSync(path, 0o644);
    const exposed = await runCli(['0', '--json', '--host', HOST, ...keyed(path)]);
    assert.equal(exposed.code, 1);
    assert.match(exposed.stderr, /--network-key: .*accessible by other users.*chmod 600/);
    assert.doesNotMatch(exposed.stdout, /"ready"/, 'the node never started');

    const missing = await runCli(['0', '--json', '--host', HOST, ...keyed(join(dir, 'nowhere.key'))]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /--network-key: .*does not exist/);
  });

  it('lets two nodes with the same key chat, both ways', async (t) => {
    const procs = procsFor(t);
    const key = await createKey();
    const ann = await procs.node({ nick: 'ann', extra: keyed(key) });
    const bob = await procs.node({ nick: 'bob', peers: [`${HOST}:${ann.ready.port}`], extra: keyed(key) });
    await Promise.all([ann.waitForPeerUp(bob.ready.id), bob.waitForPeerUp(ann.ready.id)]);

    bob.send('hello from bob, in the private network');
    const atAnn = await ann.waitForMessage('hello from bob, in the private network');
    assert.equal(atAnn.from, bob.ready.id);
    assert.equal(atAnn.nick, 'bob');
    ann.send('and back from ann');
    const atBob = await bob.waitForMessage('and back from ann');
    assert.equal(atBob.from, ann.ready.id);
    for (const node of [ann, bob]) {
      assert.ok(!node.stderr.includes('network key mismatch'), node.describe());
    }
  });

  /**
   * `dialler` dials `listener` through a tap that lets one connection through. Both must refuse it
   * in the handshake: no peer-up on either side, and one line each naming the other end and
   * ERR_NETWORK_KEY: the listener says why, the dialler gets what closedError() promises for a
   * first message left unanswered.
   */
  async function expectRefused(
    t: TestContext,
    listenerKey: string | undefined,
    diallerKey: string | undefined,
    listenerReason: string,
  ): Promise<void> {
    const procs = procsFor(t);
    const listener = await procs.node({ nick: 'listener', extra: listenerKey ? keyed(listenerKey) : [] });
    const link = await tap(t, listener.ready.port, true);
    const dialler = await procs.node({
      nick: 'dialler',
      peers: [`${HOST}:${link.port}`],
      extra: diallerKey ? keyed(diallerKey) : [],
    });
    const mismatch = (line: string): boolean => line.includes('network key mismatch');
    await Promise.all([listener.waitForStderr(mismatch), dialler.waitForStderr(mismatch)]);
    await waitFor(
      () => link.accepted() === 1 && link.open() === 0,
      'the refused connection to close',
      WAIT_MS,
    );

    const [upstreamPort] = link.upstreamPorts;
    const listenerLines = listener.stderrLines.filter(mismatch);
    assert.equal(listenerLines.length, 1, listener.describe());
    assert.ok(
      listenerLines[0]!.includes(
        `peer at ${HOST}:${upstreamPort}: ERR_NETWORK_KEY: network key mismatch: ${listenerReason}`,
      ),
      listenerLines[0],
    );
    const diallerLines = dialler.stderrLines.filter(mismatch);
    assert.equal(diallerLines.length, 1, dialler.describe());
    assert.ok(
      diallerLines[0]!.includes(
        `peer at ${HOST}:${link.port}: ERR_NETWORK_KEY: network key mismatch: ` +
          'the peer closed the connection without answering the first handshake message',
      ),
      diallerLines[0],
    );
    for (const node of [listener, dialler]) {
      assert.deepEqual(node.events.filter(isPeerUp), [], `no peer-up at ${node.describe()}`);
      assert.doesNotMatch(node.stderr, /peer up/);
      assert.equal(node.exit, undefined, 'still running');
    }
    // The listener still answers a node of its own network (or of none, like itself).
    const friend = await procs.node({
      nick: 'friend',
      peers: [`${HOST}:${listener.ready.port}`],
      extra: listenerKey ? keyed(listenerKey) : [],
    });
    await listener.waitForPeerUp(friend.ready.id);
  }

  it('refuses a node with another key on both sides', async (t) => {
    await expectRefused(
      t,
      await createKey(),
      await createKey(),
      "the peer's first message is for another network",
    );
  });

  it('refuses a node without a key on a keyed node, on both sides', async (t) => {
    await expectRefused(t, await createKey(), undefined, 'the peer has no network key, this node has one');
  });

  it('refuses a keyed node on a node without a key, on both sides', async (t) => {
    await expectRefused(t, undefined, await createKey(), 'the peer uses a network key, this node has none');
  });

  for (const withKey of [false, true]) {
    it(`never shows the chat on the wire between two nodes (${withKey ? 'a network key' : 'no network key'})`, async (t) => {
      const procs = procsFor(t);
      const extra = withKey ? keyed(await createKey()) : [];
      const ann = await procs.node({ nick: 'annwire', extra });
      const link = await tap(t, ann.ready.port);
      const bob = await procs.node({ nick: 'bobwire', peers: [`${HOST}:${link.port}`], extra });
      await Promise.all([ann.waitForPeerUp(bob.ready.id), bob.waitForPeerUp(ann.ready.id)]);
      assert.equal(link.accepted(), 1, 'the nodes are linked through the tap');

      const upBefore = Buffer.concat(link.up).length;
      const text = 'the secret plan: meet at the old mill at nine';
      bob.send(text);
      const message = await ann.waitForMessage(text);
      assert.equal(message.from, bob.ready.id);
      const reply = 'the reply is just as secret';
      ann.send(reply);
      await bob.waitForMessage(reply);
      assert.equal(link.accepted(), 1, 'no other connection between them');
      assert.ok(
        Buffer.concat(link.up).length - upBefore > Buffer.byteLength(text),
        'the message went through the tap',
      );

      const wire = link.bytes();
      for (const secret of [
        text,
        reply,
        'secret',
        'annwire',
        'bobwire',
        ann.ready.id,
        bob.ready.id,
        '"type"',
      ]) {
        assert.equal(wire.indexOf(secret), -1, `${JSON.stringify(secret)} is on the wire`);
        assert.equal(
          wire.indexOf(Buffer.from(secret, 'utf16le')),
          -1,
          `${JSON.stringify(secret)} is on the wire`,
        );
      }
    });
  }
});
