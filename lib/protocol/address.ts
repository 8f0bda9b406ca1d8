import { isIP } from 'node:net';

/** A TCP endpoint. `host` is a name, an IPv4 address or an IPv6 address without brackets. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/** Why a `host:port` string was refused; thrown by {@link parseAddress}. */
export class AddressError extends Error {
  override readonly name = 'AddressError';
}

const HOSTNAME =
  /^(?=.{1,253}$)[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,62})(?:\.[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,62}))*\.?$/;

/** An IPv4 address in the form the WHATWG URL parser gives it: four decimal bytes, no leading zeros. */
const CANONICAL_IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Parses a port number written in decimal, 1..65535 (or 0..65535 with `allowZero`). */
export function parsePort(text: string, allowZero = false): number {
  if (!/^\d{1,5}$/.test(text)) throw new AddressError(`port ${JSON.stringify(text)} is not a number`);
  const port = Number(text);
  if (port > 65535 || (port === 0 && !allowZero)) {
    throw new AddressError(`port ${port} is out of range (${allowZero ? 0 : 1}-65535)`);
  }
  return port;
}

/**
 * Parses `host:port` as users type it: `localhost:8002`, `127.0.0.1:8002`, `[::1]:8002`.
 * @throws {AddressError} naming what is wrong.
 */
export function parseAddress(text: string): Address {
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':')
      throw new AddressError(`${JSON.stringify(text)}: expected [ipv6]:port`);
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (isIP(host) !== 6)
      throw new AddressError(`${JSON.stringify(text)}: ${JSON.stringify(host)} is not an IPv6 address`);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon <= 0) throw new AddressError(`${JSON.stringify(text)}: expected host:port`);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) {
      throw new AddressError(
        `${JSON.stringify(text)}: write an IPv6 address in brackets, as [${host}]:${portText}`,
      );
    }
    if (isIP(host) === 0 && !HOSTNAME.test(host)) {
      throw new AddressError(
        `${JSON.stringify(text)}: ${JSON.stringify(host)} is not a host name or IP address`,
      );
    }
  }
  let port: number;
  try {
    port = parsePort(portText);
  } catch (err) {
    if (err instanceof AddressError) throw new AddressError(`${JSON.stringify(text)}: ${err.message}`);
    throw err;
  }
  return { host: normalizeHost(host), port };
}

/** Writes an address the way {@link parseAddress} reads it (IPv6 in brackets). */
export function formatAddress(address: Address): string {
  return isIP(address.host) === 6 ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Puts a host in one canonical spelling, so one node is never known under two: names lower-cased,
 * IPv6 in RFC 5952 form (`2001:db8::1`), IPv4 shorthands the way the resolver reads them
 * (`127.1`, `0x7f.1`, `2130706433` → `127.0.0.1`), IPv4-mapped IPv6 unwrapped (`::ffff:10.0.0.1` → `10.0.0.1`).
 */
export function normalizeHost(host: string): string {
  // Fast paths for the spellings sockets report (`127.0.0.1`, and `::ffff:127.0.0.1` on a dual-stack
  // listener), already canonical: no URL parse, and no IPv6 check (node:net's IPv6 regex compiles to
  // ~220 KB of machine code). Run for every connection and every entry of every peer list.
  if (CANONICAL_IPV4.test(host)) return host;
  if (host.startsWith('::ffff:') && CANONICAL_IPV4.test(host.slice(7))) return host.slice(7);
  return canonicalHost(host);
}

/**
 * {@link normalizeHost} without its fast paths: every spelling through the URL parser. Exported so
 * a spec can check that the fast paths agree with it.
 */
export function canonicalHost(host: string): string {
  let canonical: string;
  try {
    // The WHATWG URL parser implements exactly these canonical forms.
    canonical = new URL(`http://${isIP(host) === 6 ? `[${host}]` : host}/`).hostname;
  } catch {
    return host.toLowerCase();
  }
  if (canonical.startsWith('[')) canonical = canonical.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (mapped !== null) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return canonical;
}

/** True for loopback addresses and `localhost`. */
export function isLoopback(host: string): boolean {
  const h = normalizeHost(host);
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** True for addresses that mean "any interface" and must never be advertised. */
export function isUnspecified(host: string): boolean {
  const h = normalizeHost(host);
  return h === '0.0.0.0' || h === '::';
}
