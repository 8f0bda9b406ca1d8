/**
 * A network lab for the multi-host specs: hosts are Linux network namespaces joined by a bridge,
 * each with its own address, and `bin/p2p` processes run inside them.
 *
 * Topology. A dedicated "switch" namespace holds the bridge `br0`; every host namespace gets one veth
 * pair, `eth0` inside the host and `p<k>` on the bridge, and the address 10.77.0.k/24. A host behind
 * NAT sits on its own private link (10.77.<n>.0/24) behind a router host whose nftables masquerade its
 * traffic; nothing on the bridge can dial in. Nothing at all is added to the root namespace: both ends
 * of every veth are created directly inside the lab's namespaces.
 *
 * Each host also has its own home directory (a per-run scratch directory), so nodes on different
 * hosts never share a data directory and a node restarted on its host keeps its identity.
 *
 * Faults. {@link Lab.cut}/{@link Lab.heal} take a host's switch port down and up (a pulled cable:
 * packets vanish silently); {@link Lab.block}/{@link Lab.unblock} drop all traffic between two hosts
 * with nftables in both hosts' namespaces; {@link LabNode.kill} sends kill -9 / SIGSTOP / SIGCONT;
 * {@link Lab.forwardPort} adds a port forward on a NAT router.
 *
 * Observation. Each node's `--json` events and stderr ({@link LabNode}); TCP connections per pair of
 * nodes from `ss` in every namespace ({@link Lab.pairCounts}); SYNs per source host from nftables
 * counters ({@link Lab.watchSyns}); what a node tells a peer on another host, from a bare peer
 * (spec/lab/probe.ts, {@link Lab.probe}); memory and descriptors from /proc.
 *
 * Safety, without exception. Every process that dials a lab address is started through
 * `ip netns exec <lab namespace>`, and its namespace is checked with `ip netns identify <pid>` once it
 * is up (a mismatch kills it and fails the test). Namespace names carry a per-run prefix
 * (`p2plab-<pid>-<n>-`); stale ones from runs whose process is gone are swept at start. Every wait is
 * bounded in time. {@link Lab.close} (called from `t.after`, so it runs when a test fails) kills every
 * process by pid and deletes every namespace; a process `exit`/signal handler does the same as a last
 * resort.
 *
 * When the lab cannot run (not root, no `ip netns`, no nft) the scenario fails with the reason and
 * a loud warning: `npm run test:lab` asks for the lab, and a scenario not run is not a pass.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isAlive } from '../helpers/pids.js';

/** The repository root: nodes run there, as `bin/p2p`. */
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = 'bin/p2p';

/**
 * The node's defaults that the scenarios' bounds are derived from (lib/node/node.ts,
 * lib/transport/backoff.ts, lib/transport/writer.ts). Kept here, not imported, so a bound is a stated
 * number in the test output rather than something that silently follows the code.
 */
export const NODE = {
  pingIntervalMs: 5_000,
  peerTimeoutMs: 15_000,
  connectTimeoutMs: 5_000,
  backoffBaseMs: 250,
  backoffMaxMs: 30_000,
  learnedDialAttempts: 8,
  outboxBytes: 8 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  helloTimeoutMs: 10_000,
} as const;

/** The lab's public subnet (inside the switch namespace only). */
export const SUBNET_PREFIX = '10.77.0.';
const NS_PREFIX = 'p2plab-';
/** Bound of every helper command (ip, nft, ss). */
const COMMAND_TIMEOUT_MS = 10_000;

// ---- availability ----------------------------------------------------------------------------

function commandWorks(cmd: string, args: readonly string[]): boolean {
  try {
    execFileSync(cmd, [...args], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS });
    return true;
  } catch {
    return false;
  }
}

/** Why the lab cannot run here, or undefined when it can. */
export function labUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'not root (ip netns and nft need root; CI runs as root)';
  if (!commandWorks('ip', ['netns', 'list'])) return '`ip netns` is not available (install iproute2)';
  if (!commandWorks('nft', ['--version'])) return '`nft` is not available (install nftables)';
  if (!commandWorks('ss', ['-V'])) return '`ss` is not available (install iproute2)';
  return undefined;
}

function shout(message: string): void {
  const bar = '!'.repeat(100);
  process.stderr.write(`\n${bar}\n!!! NETWORK LAB NOT RUN: ${message}\n${bar}\n\n`);
}

/**
 * A lab scenario: an `it` that gets a fresh {@link Lab}, closed in `t.after` whatever happens. When the
 * lab cannot run it fails, with the reason and a loud warning.
 */
export function labTest(
  name: string,
  options: { readonly timeoutMs: number },
  body: (t: TestContext, lab: Lab) => Promise<void>,
): void {
  it(name, { timeout: options.timeoutMs }, async (t) => {
    let why = labUnavailable();
    let lab: Lab | undefined;
    if (why === undefined) {
      try {
        lab = await Lab.create();
      } catch (err) {
        why = `cannot build the lab: ${(err as Error).message}`;
      }
    }
    if (lab === undefined) {
      const reason = why ?? 'unknown';
      shout(`${reason} (run as root on Linux, with iproute2 and nftables)`);
      assert.fail(`the network lab cannot run: ${reason}`);
    }
    const built = lab;
    t.after(() => built.close());
    await body(t, built);
  });
}

/** Reports one figure of a scenario in the test output (a `# figure: ...` diagnostic of the test). */
export function figure(t: TestContext, text: string): void {
  t.diagnostic(`figure: ${text}`);
}

/** Seconds with one decimal, for figures. */
export const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

// ---- commands --------------------------------------------------------------------------------

interface RunOptions {
  readonly input?: string;
  readonly allowFailure?: boolean;
}

/** Runs a helper command (ip, nft, ss) with a time bound; rejects on a non-zero exit. */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0 || options.allowFailure === true) resolve(out);
      else
        reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${err.trim() || out.trim()}`));
    });
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

/**
 * A veth pair with each end created directly in its namespace (`name` in `ns`, `peerName` in
 * `peerNs`): nothing ever appears in the root namespace.
 */
async function veth(ns: string, name: string, peerNs: string, peerName: string): Promise<void> {
  await run('ip', [
    'link',
    'add',
    name,
    'netns',
    ns,
    'type',
    'veth',
    'peer',
    'name',
    peerName,
    'netns',
    peerNs,
  ]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
export { sleep };

/**
 * Polls `check` every `intervalMs` until it returns a value other than undefined; rejects after
 * `timeoutMs` with `what` and, when given, `explain()` (the state that did not converge).
 */
export async function waitUntil<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what: string,
  explain?: () => string,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${secs(timeoutMs)} waiting for ${what}${explain ? `\n${explain()}` : ''}`,
      );
    }
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

// ---- last-resort cleanup ---------------------------------------------------------------------

/** Every lab of this process that is not closed yet. */
const openLabs = new Set<Lab>();
let handlersInstalled = false;

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.once('exit', () => {
    for (const lab of openLabs) lab.closeSync();
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      for (const lab of openLabs) lab.closeSync();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
}

function listNamespaces(): string[] {
  let text: string;
  try {
    text = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS });
  } catch {
    return [];
  }
  return text
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.length > 0);
}

/** Kills what runs in a namespace (by pid) and deletes it; synchronous, errors ignored. */
function destroyNamespaceSync(ns: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS });
    for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) killQuietly(pid, 'SIGKILL');
  } catch {
    // no such namespace
  }
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: COMMAND_TIMEOUT_MS });
  } catch {
    // already gone
  }
}

/**
 * Deletes lab namespaces left behind by runs whose process is gone (a crash, a SIGKILL of the test
 * runner). Namespaces of a live run (its pid is in the name) are left alone.
 */
export function sweepStaleNamespaces(): string[] {
  const swept: string[] = [];
  for (const ns of listNamespaces()) {
    const match = /^p2plab-(\d+)-/.exec(ns);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    destroyNamespaceSync(ns);
    swept.push(ns);
  }
  for (const dir of readdirSync(tmpdir())) {
    const match = /^p2plab-(\d+)-/.exec(dir);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    rmSync(join(tmpdir(), dir), { recursive: true, force: true });
    swept.push(dir);
  }
  return swept;
}

// ---- the lab ---------------------------------------------------------------------------------

/** A host of the lab: one network namespace with one address. */
export interface Host {
  readonly name: string;
  /** The namespace's name. */
  readonly ns: string;
  /** Its address: on the bridge (10.77.0.k), or on its private link when behind NAT. */
  readonly address: string;
  /** The bridge port of its link (for a host behind NAT: its router's). */
  readonly port: string;
  /** The router in front of it, when it is behind NAT. */
  readonly router?: Host;
}

/** The address a host's packets carry on the bridge: its own, or its NAT router's. */
export const publicAddress = (host: Host): string => host.router?.address ?? host.address;

let labCounter = 0;

/** One lab: a switch namespace with a bridge, hosts on it, and the processes run in them. */
export class Lab {
  /** Prefix of every namespace of this lab. */
  readonly prefix: string;
  readonly switchNs: string;
  /** Per-run scratch directory: each host's home (a node's data directory lives there). */
  readonly dir: string;
  readonly hosts: Host[] = [];
  readonly nodes: LabNode[] = [];
  private readonly namespaces: string[] = [];
  private readonly blocked = new Map<Host, Set<Host>>();
  private readonly synWatches = new Map<Host, { source: Host; port: number }[]>();
  private nextIndex = 1;
  private nextPrivateNet = 1;
  private closed = false;

  private constructor() {
    this.prefix = `${NS_PREFIX}${process.pid}-${++labCounter}-`;
    this.switchNs = `${this.prefix}sw`;
    this.dir = join(tmpdir(), this.prefix.slice(0, -1));
  }

  /**
   * A host's home directory: like a separate machine, each host has its own (`HOME` and
   * `XDG_STATE_HOME` point there), so two nodes on two hosts never share a data directory, and a node
   * restarted on its host finds its own again.
   */
  homeOf(host: Host): string {
    const home = join(this.dir, host.name);
    mkdirSync(join(home, 'state'), { recursive: true, mode: 0o700 });
    return home;
  }

  /** Sweeps stale lab namespaces, then builds the switch namespace and its bridge. */
  static async create(): Promise<Lab> {
    installExitHandlers();
    const swept = sweepStaleNamespaces();
    if (swept.length > 0) process.stderr.write(`lab: removed stale namespaces ${swept.join(', ')}\n`);
    const lab = new Lab();
    openLabs.add(lab);
    try {
      await lab.addNamespace(lab.switchNs);
      await lab.ip(lab.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
      await lab.ip(lab.switchNs, 'link', 'set', 'br0', 'up');
    } catch (err) {
      await lab.close();
      throw err;
    }
    return lab;
  }

  private async addNamespace(ns: string): Promise<void> {
    assert.ok(ns.startsWith(this.prefix), `lab namespaces carry the prefix ${this.prefix}`);
    await run('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.ip(ns, 'link', 'set', 'lo', 'up');
  }

  private ip(ns: string, ...args: string[]): Promise<string> {
    return run('ip', ['-n', ns, ...args]);
  }

  /** Runs a command inside one of this lab's namespaces. */
  exec(host: Host | string, cmd: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
    const ns = typeof host === 'string' ? host : host.ns;
    assert.ok(this.namespaces.includes(ns), `${ns} is not a namespace of this lab`);
    return run('ip', ['netns', 'exec', ns, cmd, ...args], options);
  }

  /** A new host on the bridge, with the next address 10.77.0.k. */
  async addHost(name: string): Promise<Host> {
    assert.ok(!this.closed, 'lab is closed');
    assert.ok(/^[a-z0-9]{1,12}$/.test(name), `host name ${name}: 1-12 of [a-z0-9]`);
    const index = this.nextIndex++;
    assert.ok(index < 254, 'at most 253 hosts');
    const ns = `${this.prefix}${name}`;
    const port = `p${index}`;
    await this.addNamespace(ns);
    // Both ends are created directly in their namespaces: nothing appears in the root namespace.
    await veth(ns, 'eth0', this.switchNs, port);
    await this.ip(ns, 'addr', 'add', `${SUBNET_PREFIX}${index}/24`, 'dev', 'eth0');
    await this.ip(ns, 'link', 'set', 'eth0', 'up');
    await this.ip(this.switchNs, 'link', 'set', port, 'master', 'br0');
    await this.ip(this.switchNs, 'link', 'set', port, 'up');
    const host: Host = { name, ns, address: `${SUBNET_PREFIX}${index}`, port };
    this.hosts.push(host);
    return host;
  }

  /**
   * A host behind a NAT router: the router sits on the bridge (10.77.0.k) and masquerades the host's
   * private link 10.77.n.0/24. The host can dial out; nobody on the bridge can dial in (no route to
   * the private net, and the router forwards only connections opened from inside; the router itself
   * listens on nothing, so a dial to its public address is refused).
   */
  async addNatHost(name: string): Promise<Host> {
    const router = await this.addHost(`${name}gw`);
    const net = this.nextPrivateNet++;
    assert.ok(net < 255, 'at most 254 NAT hosts');
    const ns = `${this.prefix}${name}`;
    await this.addNamespace(ns);
    await veth(ns, 'eth0', router.ns, 'lan0');
    await this.ip(router.ns, 'addr', 'add', `10.77.${net}.1/24`, 'dev', 'lan0');
    await this.ip(router.ns, 'link', 'set', 'lan0', 'up');
    await this.ip(ns, 'addr', 'add', `10.77.${net}.2/24`, 'dev', 'eth0');
    await this.ip(ns, 'link', 'set', 'eth0', 'up');
    await this.ip(ns, 'route', 'add', 'default', 'via', `10.77.${net}.1`);
    // /proc/sys/net is per network namespace: this turns forwarding on in the router only.
    await this.exec(router, 'sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
    await this.exec(router, 'nft', ['-f', '-'], {
      input: `
table ip p2plab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "eth0" masquerade
  }
}
table inet p2plab_nat_filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "eth0" accept
    ct status dnat accept
  }
}
`,
    });
    const host: Host = { name, ns, address: `10.77.${net}.2`, port: router.port, router };
    this.hosts.push(host);
    return host;
  }

  /**
   * Port forwarding on a NAT host's router: connections to the router's public address on `port` go
   * to the host behind it (a DNAT rule, like a home router's "port forward").
   */
  async forwardPort(host: Host, port: number): Promise<void> {
    assert.ok(host.router !== undefined, `${host.name} is not behind NAT`);
    await this.exec(host.router, 'nft', ['-f', '-'], {
      input: `
table ip p2plab_forward {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" tcp dport ${port} dnat to ${host.address}:${port}
  }
}
`,
    });
  }

  /** Pulls a host's cable: its bridge port goes down, its packets vanish silently. */
  async cut(host: Host): Promise<void> {
    await this.ip(this.switchNs, 'link', 'set', host.port, 'down');
  }

  /** Plugs the cable back in. */
  async heal(host: Host): Promise<void> {
    await this.ip(this.switchNs, 'link', 'set', host.port, 'up');
  }

  /** Drops all traffic between `a` and `b` (nftables input rules in both namespaces, silent). */
  async block(a: Host, b: Host): Promise<void> {
    this.blockedSet(a).add(b);
    this.blockedSet(b).add(a);
    await Promise.all([this.renderBlocks(a), this.renderBlocks(b)]);
  }

  /** Lets traffic between `a` and `b` through again. */
  async unblock(a: Host, b: Host): Promise<void> {
    this.blockedSet(a).delete(b);
    this.blockedSet(b).delete(a);
    await Promise.all([this.renderBlocks(a), this.renderBlocks(b)]);
  }

  private blockedSet(host: Host): Set<Host> {
    let set = this.blocked.get(host);
    if (set === undefined) this.blocked.set(host, (set = new Set()));
    return set;
  }

  private async renderBlocks(host: Host): Promise<void> {
    const sources = [...this.blockedSet(host)].map(publicAddress);
    const rule = sources.length > 0 ? `ip saddr { ${sources.join(', ')} } drop` : '';
    // Declaring the table first makes the delete succeed on the first call; the file is atomic.
    await this.exec(host, 'nft', ['-f', '-'], {
      input: `
table inet p2plab_block {}
delete table inet p2plab_block
table inet p2plab_block {
  chain input {
    type filter hook input priority filter; policy accept;
    ${rule}
  }
}
`,
    });
  }

  /**
   * Counts TCP SYNs (connection attempts) that reach `host` on `port`, per source host, with nftables
   * counters in `host`'s namespace. Read them with {@link Lab.synCounts}.
   */
  async watchSyns(host: Host, port: number, sources: readonly Host[]): Promise<void> {
    const watches = sources.map((source) => ({ source, port }));
    this.synWatches.set(host, watches);
    const rules = watches
      .map(
        (w) =>
          `ip saddr ${publicAddress(w.source)} tcp dport ${w.port} tcp flags & (syn | ack) == syn counter comment "syn-${w.source.name}"`,
      )
      .join('\n    ');
    await this.exec(host, 'nft', ['-f', '-'], {
      input: `
table inet p2plab_watch {}
delete table inet p2plab_watch
table inet p2plab_watch {
  chain input {
    type filter hook input priority -10; policy accept;
    ${rules}
  }
}
`,
    });
  }

  /** SYNs counted by {@link Lab.watchSyns} on `host`, by source host name. */
  async synCounts(host: Host): Promise<Map<string, number>> {
    const text = await this.exec(host, 'nft', ['-j', 'list', 'table', 'inet', 'p2plab_watch']);
    const parsed = JSON.parse(text) as { nftables: Record<string, unknown>[] };
    const counts = new Map<string, number>();
    for (const item of parsed.nftables) {
      const rule = item['rule'] as { comment?: string; expr?: Record<string, unknown>[] } | undefined;
      if (rule?.comment === undefined || !rule.comment.startsWith('syn-')) continue;
      const counter = rule.expr?.find((e) => 'counter' in e)?.['counter'] as { packets: number } | undefined;
      counts.set(rule.comment.slice(4), counter?.packets ?? 0);
    }
    return counts;
  }

  /**
   * Starts `bin/p2p args` inside `host`'s namespace (`ip netns exec`), waits for its `ready` event and
   * checks with `ip netns identify` that the process runs in that namespace.
   */
  async start(
    host: Host,
    args: readonly string[],
    options: { readonly label?: string } = {},
  ): Promise<LabNode> {
    const node = this.spawn(host, args, options);
    await node.ready();
    return node;
  }

  /** Like {@link Lab.start} without waiting for `ready` (the check of the namespace still runs). */
  spawn(host: Host, args: readonly string[], options: { readonly label?: string } = {}): LabNode {
    assert.ok(!this.closed, 'lab is closed');
    assert.ok(this.hosts.includes(host), `${host.name} is not a host of this lab`);
    const node = new LabNode(this, host, args, options.label ?? `${host.name}:${args[0] ?? '?'}`);
    this.nodes.push(node);
    return node;
  }

  /** Runs the raw-peer probe (spec/lab/probe.ts) from `host` against `targets`; see there. */
  async probe(host: Host, targets: readonly string[]): Promise<ProbeResult[]> {
    const out = await this.exec(host, process.execPath, ['--import', 'tsx', 'spec/lab/probe.ts', ...targets]);
    return out
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line) as ProbeResult);
  }

  /** The namespace `pid` runs in, as `ip netns identify` names it ('' for the root namespace). */
  async identify(pid: number): Promise<string> {
    return (await run('ip', ['netns', 'identify', String(pid)])).trim();
  }

  /**
   * The established TCP connections between lab nodes, from `ss` in every host namespace: one entry
   * per connection (not per end), naming the two nodes.
   */
  async connections(): Promise<LabConnection[]> {
    const ends: { local: string; peer: string; pid: number }[] = [];
    for (const host of this.hosts) {
      const text = await this.exec(host, 'ss', ['-Htnp', 'state', 'established']);
      for (const line of text.split('\n')) {
        const m = /^\s*\d+\s+\d+\s+(\S+)\s+(\S+)\s+users:\(\("[^"]*",pid=(\d+),/.exec(line);
        if (m !== null) ends.push({ local: unmap(m[1]!), peer: unmap(m[2]!), pid: Number(m[3]) });
      }
    }
    const byPid = new Map(this.nodes.filter((n) => n.exit === undefined).map((n) => [n.pid, n]));
    const byLocal = new Map(ends.map((e) => [e.local, e]));
    const seen = new Set<string>();
    const out: LabConnection[] = [];
    for (const end of ends) {
      const a = byPid.get(end.pid);
      const other = byLocal.get(end.peer);
      const b = other === undefined ? undefined : byPid.get(other.pid);
      if (a === undefined || b === undefined || other?.peer !== end.local) continue;
      const key = [end.local, end.peer].sort().join(' ');
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ a, b, key });
    }
    return out;
  }

  /**
   * Connections per pair of the given live nodes: `duplicates` lists pairs with more than one,
   * `count` is the number of connections in all.
   */
  async pairCounts(
    nodes: readonly LabNode[],
  ): Promise<{ pairs: Map<string, number>; duplicates: string[]; count: number }> {
    const wanted = new Set(nodes);
    const pairs = new Map<string, number>();
    let count = 0;
    for (const { a, b } of await this.connections()) {
      if (!wanted.has(a) || !wanted.has(b)) continue;
      const key = pairKey(a.label, b.label);
      pairs.set(key, (pairs.get(key) ?? 0) + 1);
      count++;
    }
    const duplicates = [...pairs].filter(([, n]) => n > 1).map(([k, n]) => `${k} ×${n}`);
    return { pairs, duplicates, count };
  }

  /** Kills every process (by pid) and deletes every namespace of this lab. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const node of this.nodes) node.kill('SIGKILL');
    await Promise.all(this.nodes.map((node) => Promise.race([node.exited, sleep(3_000)])));
    // Hosts first (their veths go with them), the switch last.
    for (const ns of [...this.namespaces].reverse()) destroyNamespaceSync(ns);
    rmSync(this.dir, { recursive: true, force: true });
    openLabs.delete(this);
    const left = listNamespaces().filter((ns) => ns.startsWith(this.prefix));
    if (left.length > 0) process.stderr.write(`lab: could not delete namespaces ${left.join(', ')}\n`);
  }

  /** The last-resort cleanup of the exit handler: synchronous. */
  closeSync(): void {
    this.closed = true;
    for (const node of this.nodes) node.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) destroyNamespaceSync(ns);
    rmSync(this.dir, { recursive: true, force: true });
    openLabs.delete(this);
  }
}

/** `[::ffff:10.77.0.1]:8001` (an IPv4 peer of a dual-stack socket) → `10.77.0.1:8001`. */
const unmap = (endpoint: string): string => endpoint.replace(/^\[::ffff:([\d.]+)\]/, '$1');

/** One TCP connection between two lab nodes. */
export interface LabConnection {
  readonly a: LabNode;
  readonly b: LabNode;
  readonly key: string;
}

/** What the probe saw from one node: its hello and the first peer list it sent. */
export interface ProbeResult {
  readonly target: string;
  readonly error?: string;
  readonly hello?: { id: string; port: number; addr?: string };
  readonly peers?: { id: string; addr: string }[];
}

// ---- a node --------------------------------------------------------------------------------

export interface ReceivedMessage {
  readonly id: string;
  readonly from: string;
  readonly nick: string;
  /** The text, cut to 200 characters (the slow-reader scenario sends kilobytes). */
  readonly text: string;
  readonly ts: number;
  /** When the test process read it (ms, Date.now): one clock for the whole lab. */
  readonly at: number;
}

export interface PeerState {
  readonly peer: string;
  readonly nick: string;
  readonly address: string;
  readonly direction: 'in' | 'out';
}

export interface PeerChange extends PeerState {
  readonly event: 'peer-up' | 'peer-down';
  readonly reason?: string;
  readonly at: number;
}

/** Most stderr lines kept per node (the oldest are dropped). */
const MAX_STDERR_LINES = 5_000;

/**
 * A `bin/p2p --json` process in a lab host. Parses its events as they come and keeps what the
 * scenarios ask about: messages by text, peer changes, the current peer set, its stderr.
 */
export class LabNode {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startedAt = Date.now();
  id: string | undefined;
  listenPort: number | undefined;
  readyAt: number | undefined;
  readonly messages: ReceivedMessage[] = [];
  readonly peerChanges: PeerChange[] = [];
  /** Connected peers now, by node id. */
  readonly peers = new Map<string, PeerState>();
  /** Messages this node sent: text (cut to 200) → id, in order. */
  readonly sent: { text: string; id: string; ts: number; at: number }[] = [];
  readonly stderrLines: string[] = [];
  readonly nonJson: string[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;
  /** Set when the namespace check failed. */
  namespaceError: string | undefined;
  private readonly counts = new Map<string, number>();
  private readonly unsent: string[] = [];
  private stdoutPartial = '';
  private stderrPartial = '';
  private checked: Promise<void> | undefined;

  constructor(
    private readonly lab: Lab,
    readonly host: Host,
    readonly args: readonly string[],
    readonly label: string,
  ) {
    const home = lab.homeOf(host);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      USER: 'lab',
      HOME: home,
      XDG_STATE_HOME: join(home, 'state'),
    };
    delete env['NODE_TEST_CONTEXT']; // a program under test, not a test file
    delete env['NODE_OPTIONS'];
    // `ip netns exec` enters the namespace, then execs bin/p2p: same pid, never in the root namespace.
    this.child = spawn('ip', ['netns', 'exec', host.ns, BIN, ...args], {
      cwd: ROOT,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    if (this.child.pid === undefined) throw new Error(`could not spawn ${BIN} in ${host.ns}`);
    this.pid = this.child.pid;
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => this.onStdout(chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => this.onStderr(chunk));
    this.child.stdin!.on('error', () => {}); // EPIPE once it is gone
    this.exited = new Promise((resolve) => {
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      });
    });
  }

  /** Waits for `ready`, then checks the process's namespace. */
  async ready(timeoutMs = 30_000): Promise<this> {
    await waitUntil(
      () => (this.readyAt !== undefined ? true : this.exit !== undefined ? false : undefined),
      timeoutMs,
      `ready from ${this.label}`,
      () => this.describe(),
    ).then((ok) => assert.ok(ok, `${this.label} exited before ready\n${this.describe()}`));
    await this.checkNamespace();
    return this;
  }

  /** Asserts (once) that the process runs in its host's namespace; kills it otherwise. */
  checkNamespace(): Promise<void> {
    this.checked ??= (async () => {
      const ns = await this.lab.identify(this.pid);
      const cmdline = readFileSync(`/proc/${this.pid}/cmdline`, 'utf8').split('\0');
      if (ns !== this.host.ns || !cmdline.some((arg) => arg.endsWith(BIN))) {
        this.kill('SIGKILL');
        this.namespaceError = `pid ${this.pid} runs in namespace "${ns}" (${cmdline.join(' ')}), not ${this.host.ns}`;
        assert.fail(`refusing to go on: ${this.namespaceError}`);
      }
    })();
    return this.checked;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  /** `host:port` where this node listens, on its host's address. */
  get address(): string {
    return `${this.host.address}:${this.listenPort ?? this.args[0] ?? '?'}`;
  }

  /** Types one line into the node: a chat message. */
  send(text: string): void {
    this.unsent.push(text.slice(0, 200));
    this.child.stdin!.write(`${text}\n`);
  }

  /** How many times this node showed a message with this text (texts are cut to 200 characters). */
  received(text: string): number {
    return this.counts.get(text.slice(0, 200)) ?? 0;
  }

  /** Sends a signal by pid (kill -9, SIGSTOP, SIGCONT); nothing when it has exited. */
  kill(signal: NodeJS.Signals): void {
    if (this.exit === undefined) killQuietly(this.pid, signal);
  }

  /** Resident memory in bytes (VmRSS), or undefined when gone. */
  rss(): number | undefined {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
      return m === null ? undefined : Number(m[1]) * 1024;
    } catch {
      return undefined;
    }
  }

  /** Open file descriptors, or undefined when gone. */
  fds(): number | undefined {
    try {
      return readdirSync(`/proc/${this.pid}/fd`).length;
    } catch {
      return undefined;
    }
  }

  /** A description for error messages: command line, state, peers and the tail of stderr. */
  describe(lines = 12): string {
    const state = this.exit === undefined ? 'running' : `exited ${JSON.stringify(this.exit)}`;
    const peers = [...this.peers.values()].map((p) => p.address).join(', ') || 'none';
    const tail = this.stderrLines.slice(-lines).join('\n      ');
    return `  ${this.label} (pid ${this.pid}, ${this.host.ns}, id ${this.id ?? '?'}, ${state}) peers: ${peers}\n      ${tail}`;
  }

  private onStdout(chunk: string): void {
    const lines = (this.stdoutPartial + chunk).split('\n');
    this.stdoutPartial = lines.pop() ?? '';
    const at = Date.now();
    for (const line of lines) {
      if (line.length === 0) continue;
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        this.nonJson.push(line.slice(0, 200));
        continue;
      }
      switch (e['event']) {
        case 'ready':
          this.id = String(e['id']);
          this.listenPort = Number(e['port']);
          this.readyAt = at;
          break;
        case 'message': {
          const text = String(e['text']).slice(0, 200);
          this.messages.push({
            id: String(e['id']),
            from: String(e['from']),
            nick: String(e['nick']),
            text,
            ts: Number(e['ts']),
            at,
          });
          this.counts.set(text, (this.counts.get(text) ?? 0) + 1);
          break;
        }
        case 'sent': {
          const text = this.unsent.shift() ?? '';
          this.sent.push({ text, id: String(e['id']), ts: Number(e['ts']), at });
          break;
        }
        case 'peer-up':
        case 'peer-down': {
          const state: PeerState = {
            peer: String(e['peer']),
            nick: String(e['nick']),
            address: String(e['address']),
            direction: e['direction'] === 'in' ? 'in' : 'out',
          };
          const change: PeerChange = {
            ...state,
            event: e['event'],
            at,
            ...(typeof e['reason'] === 'string' ? { reason: e['reason'] } : {}),
          };
          this.peerChanges.push(change);
          if (e['event'] === 'peer-up') this.peers.set(state.peer, state);
          else this.peers.delete(state.peer);
          break;
        }
        default:
          break;
      }
    }
  }

  private onStderr(chunk: string): void {
    const lines = (this.stderrPartial + chunk).split('\n');
    this.stderrPartial = lines.pop() ?? '';
    const at = new Date().toISOString().slice(11, 23);
    for (const line of lines) if (line.length > 0) this.stderrLines.push(`${at} ${line}`);
    if (this.stderrLines.length > MAX_STDERR_LINES)
      this.stderrLines.splice(0, this.stderrLines.length - MAX_STDERR_LINES);
  }
}

// ---- checks shared by the scenarios ---------------------------------------------------------

/** How {@link Lab.pairCounts} names a pair of nodes by their labels (either order). */
export function pairKey(a: string, b: string): string {
  return [a, b].sort().join(' – ');
}

/** Node ids are known once ready; a map from id to node. */
export function byId(nodes: readonly LabNode[]): Map<string, LabNode> {
  return new Map(nodes.filter((n) => n.id !== undefined).map((n) => [n.id!, n]));
}

/** True when the live nodes' peer tables form one connected graph in which every node has a peer. */
export function connectedGraph(nodes: readonly LabNode[]): boolean {
  const live = nodes.filter((n) => n.alive && n.id !== undefined);
  if (live.length <= 1) return true;
  const ids = byId(live);
  const seen = new Set<LabNode>([live[0]!]);
  const queue = [live[0]!];
  while (queue.length > 0) {
    const node = queue.shift()!;
    for (const peer of node.peers.keys()) {
      const next = ids.get(peer);
      if (next !== undefined && !seen.has(next)) {
        seen.add(next);
        queue.push(next);
      }
    }
  }
  return seen.size === live.length && live.every((n) => n.peers.size > 0);
}

/** Describes every node, for an error message. */
export function describeAll(nodes: readonly LabNode[]): string {
  return nodes.map((n) => n.describe(6)).join('\n');
}

/** Waits until every node of `nodes` has shown each text once; resolves with the time it took. */
export async function waitForDelivery(
  nodes: readonly LabNode[],
  texts: readonly string[],
  timeoutMs: number,
  what: string,
): Promise<number> {
  const start = Date.now();
  await waitUntil(
    () => (nodes.every((n) => texts.every((text) => n.received(text) >= 1)) ? true : undefined),
    timeoutMs,
    what,
    () =>
      nodes
        .map(
          (n) =>
            `${n.label} is missing: ${texts.filter((text) => n.received(text) === 0).join(' | ') || '-'}`,
        )
        .join('\n') +
      '\n' +
      describeAll(nodes),
  );
  return Date.now() - start;
}

/** Percentile (0..100) of a list of numbers; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Mebibytes with one decimal. */
export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

// ---- scenario building blocks ---------------------------------------------------------------

/** Every node sends `perNode` lines; waits until each other node shows each once; checks exactly once. */
export async function chatRound(
  t: TestContext,
  nodes: readonly LabNode[],
  tag: string,
  perNode: number,
  boundMs: number,
): Promise<void> {
  const texts = nodes.map((n, i) =>
    Array.from({ length: perNode }, (_, k) => `${tag} from ${n.label} #${i}.${k}`),
  );
  const start = Date.now();
  for (const [i, node] of nodes.entries()) for (const text of texts[i]!) node.send(text);
  await Promise.all(
    nodes.map((node, i) =>
      waitForDelivery(
        [node],
        texts.filter((_, j) => j !== i).flat(),
        boundMs,
        `${node.label} to receive the ${tag} messages`,
      ),
    ),
  );
  const elapsed = Date.now() - start;
  // A duplicate would arrive right behind the first copy; give stragglers a moment before counting.
  await new Promise((resolve) => setTimeout(resolve, 500));
  for (const [i, node] of nodes.entries()) {
    for (const [j, list] of texts.entries()) {
      for (const text of list)
        assert.equal(
          node.received(text),
          i === j ? 0 : 1,
          `${node.label} shows ${JSON.stringify(text)} ${i === j ? 'never' : 'once'}`,
        );
    }
  }
  const total = texts.flat().length;
  figure(
    t,
    `${tag}: ${total} messages × ${nodes.length - 1} receivers delivered, each exactly once, in ${secs(elapsed)} (bound ${secs(boundMs)})`,
  );
}

/** Waits until each node is linked to exactly the others; resolves with the time it took. */
export async function fullMesh(nodes: readonly LabNode[], boundMs: number): Promise<number> {
  const start = Date.now();
  const ids = byId(nodes);
  await waitUntil(
    () =>
      nodes.every((n) => n.peers.size === nodes.length - 1 && [...n.peers.keys()].every((id) => ids.has(id)))
        ? true
        : undefined,
    boundMs,
    `a full mesh of ${nodes.length} nodes`,
    () => describeAll(nodes),
  );
  return Date.now() - start;
}

/** Waits until `ss` shows exactly one TCP connection per pair of nodes (retired duplicates gone). */
export async function onePerPair(lab: Lab, nodes: readonly LabNode[], boundMs: number): Promise<number> {
  const start = Date.now();
  const pairs = (nodes.length * (nodes.length - 1)) / 2;
  let last = '';
  await waitUntil(
    async () => {
      const { count, duplicates } = await lab.pairCounts(nodes);
      last = `${count} connections for ${pairs} pairs; duplicates: ${duplicates.join(', ') || 'none'}`;
      return count === pairs && duplicates.length === 0 ? true : undefined;
    },
    boundMs,
    'exactly one TCP connection per pair of nodes',
    () => last,
    250,
  );
  return Date.now() - start;
}

/**
 * The seed's example 3 on two hosts: host 1 runs `bin/p2p 8001 H2:8001 H2:8002 H2:8003`,
 * `bin/p2p 8002 H2:...` and `bin/p2p 8003 H2:...`, host 2 the same with H1 (plus `extra`, e.g.
 * `--json`). All six start at once; resolves when all are ready.
 */
export async function startTwoByThree(
  lab: Lab,
  h1: Host,
  h2: Host,
  extra: readonly string[] = ['--json'],
): Promise<LabNode[]> {
  const ports = ['8001', '8002', '8003'];
  return Promise.all([
    ...ports.map((port) => lab.start(h1, [port, ...ports.map((p) => `${h2.address}:${p}`), ...extra])),
    ...ports.map((port) => lab.start(h2, [port, ...ports.map((p) => `${h1.address}:${p}`), ...extra])),
  ]);
}

/** One line sent by a {@link Chatter}. */
export interface Sent {
  readonly text: string;
  readonly from: LabNode;
  readonly at: number;
}

/**
 * Keeps a set of nodes chatting: every `everyMs`, each live node sends one numbered line. Bounded by
 * `maxMs` (it stops by itself); `stop()` ends it sooner.
 */
export class Chatter {
  readonly sent: Sent[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly until: number;
  private round = 0;

  constructor(
    private readonly nodes: () => readonly LabNode[],
    private readonly tag: string,
    everyMs: number,
    maxMs: number,
  ) {
    this.until = Date.now() + maxMs;
    this.timer = setInterval(() => this.tick(), everyMs);
    this.tick();
  }

  private tick(): void {
    if (Date.now() > this.until) {
      this.stop();
      return;
    }
    this.round++;
    for (const node of this.nodes()) {
      if (!node.alive) continue;
      const text = `${this.tag} ${node.label} ${this.round}`;
      node.send(text);
      this.sent.push({ text, from: node, at: Date.now() });
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Lines sent in [from, to). */
  between(from: number, to: number): Sent[] {
    return this.sent.filter((s) => s.at >= from && s.at < to);
  }
}

/** Asserts that no node showed any text more than once, and never its own. */
export function assertAtMostOnce(nodes: readonly LabNode[], sent: readonly Sent[]): void {
  for (const s of sent) {
    for (const node of nodes) {
      const n = node.received(s.text);
      if (node === s.from) assert.equal(n, 0, `${node.label} never shows its own ${JSON.stringify(s.text)}`);
      else assert.ok(n <= 1, `${node.label} shows ${JSON.stringify(s.text)} ${n} times`);
    }
  }
}
