// Which URLs an HTTP_GET_JSON may fetch (--allow-url, --deny-url). Any
// client can submit any URL, so without this an agent fetches whatever it is
// told: cloud metadata at 169.254.169.254, or an admin port on its own host.
//
// A rule is a CIDR range (10.0.0.0/8, fe80::/10), an IP address, a host name
// (api.example.com) or a host pattern (*.example.com; `*` matches any run of
// characters). A request is judged, in this order:
//   1. a --deny-url rule matches its host name or address: denied;
//   2. its address is link-local (169.254.0.0/16, fe80::/10) and no --allow-url
//      range or address contains it: denied (a host name rule is not enough:
//      a name is whatever its DNS says);
//   3. --allow-url rules were given and none matches its host name or address: denied;
//   4. allowed.
// The address judged is the one the connection goes to: lookup() resolves the
// name, checks every address, and hands the checked one to the socket, so a
// name that resolves to something else a moment later (DNS rebinding) cannot
// slip past. Each redirect hop is judged the same way.
import dns from 'node:dns';
import net, { BlockList, type LookupFunction } from 'node:net';
import { UsageError } from '../flags.ts';

const LINK_LOCAL: ReadonlyArray<[string, number, 'ipv4' | 'ipv6']> = [
  ['169.254.0.0', 16, 'ipv4'],
  ['fe80::', 10, 'ipv6'],
];

interface RuleSet {
  /** The rules as given, for messages. */
  text: string[];
  addresses: BlockList;
  hosts: RegExp[];
}

/** Thrown (as the request's error) when the policy refuses a host or an address. */
export class UrlDeniedError extends Error {
  readonly code = 'URL_DENIED';
  constructor(message: string) {
    super(message);
    this.name = 'UrlDeniedError';
  }
}

export class UrlPolicy {
  private readonly allow: RuleSet;
  private readonly deny: RuleSet;
  private readonly linkLocal = new BlockList();
  private readonly unspecified = new BlockList();

  constructor(allow: readonly string[] = [], deny: readonly string[] = []) {
    this.allow = ruleSet(allow, 'allow-url');
    this.deny = ruleSet(deny, 'deny-url');
    for (const [addr, prefix, type] of LINK_LOCAL) this.linkLocal.addSubnet(addr, prefix, type);
    this.unspecified.addSubnet('0.0.0.0', 8, 'ipv4');
    this.unspecified.addAddress('::', 'ipv6');
  }

  /**
   * Why `host` (a URL's hostname; an IP literal is judged as an address) may
   * not be fetched, or undefined if it may so far. A name is judged again by
   * address in lookup().
   */
  checkHost(host: string): string | undefined {
    const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
    if (net.isIP(bare)) return this.checkAddress(bare, undefined);
    if (this.deny.hosts.some((re) => re.test(bare))) return `${bare} matches --deny-url ${this.deny.text.join(',')}`;
    return undefined;
  }

  /** Why the connection to `address` (resolved from `host`, if a name) may not go ahead, or undefined. */
  checkAddress(given: string, host: string | undefined): string | undefined {
    const type = net.isIPv6(given) ? 'ipv6' : 'ipv4';
    const what = host === undefined ? given : `${host} (${given})`;
    // A connection to 0.0.0.0 or :: reaches this host: judge it as loopback,
    // or a --deny-url 127.0.0.0/8 would not stop http://0.0.0.0:8080/.
    const address = this.unspecified.check(given, type) ? (type === 'ipv6' ? '::1' : '127.0.0.1') : given;
    const hostIs = (set: RuleSet): boolean => host !== undefined && set.hosts.some((re) => re.test(host));
    if (this.deny.addresses.check(address, type) || hostIs(this.deny)) return `${what} matches --deny-url ${this.deny.text.join(',')}`;
    const allowedAddress = this.allow.addresses.check(address, type);
    if (this.linkLocal.check(address, type) && !allowedAddress) {
      return `${what} is link-local (169.254.0.0/16, fe80::/10: cloud metadata lives there); an --allow-url range must name it to fetch it`;
    }
    if (this.allow.text.length > 0 && !allowedAddress && !hostIs(this.allow)) return `${what} matches no --allow-url (${this.allow.text.join(',')})`;
    return undefined;
  }

  /**
   * A `lookup` for node:http's request options: resolves as dns.lookup does,
   * then refuses the connection (a UrlDeniedError) if any address it found
   * is denied. The socket connects only to an address checked here.
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const host = hostname.toLowerCase();
      for (const a of addresses) {
        const why = this.checkAddress(a.address, host);
        if (why) return callback(new UrlDeniedError(why), '', 0);
      }
      if (addresses.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
      if (options.all) return (callback as unknown as (e: null, all: dns.LookupAddress[]) => void)(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** The default: deny link-local addresses only. */
export const DEFAULT_URL_POLICY = new UrlPolicy();

function ruleSet(rules: readonly string[], flag: string): RuleSet {
  const set: RuleSet = { text: [...rules], addresses: new BlockList(), hosts: [] };
  for (const rule of rules) {
    const [addr, prefixText, extra] = rule.split('/');
    const type = net.isIP(addr ?? '');
    if (type !== 0 && extra === undefined) {
      const max = type === 4 ? 32 : 128;
      const prefix = prefixText === undefined ? max : /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
      if (!(prefix >= 0 && prefix <= max)) throw new UsageError(`--${flag} ${JSON.stringify(rule)}: the prefix length must be 0 to ${max}`);
      set.addresses.addSubnet(addr!, prefix, type === 4 ? 'ipv4' : 'ipv6');
    } else if (/^[a-z0-9*]([a-z0-9*.-]*[a-z0-9*])?$/i.test(rule)) {
      const escaped = rule.toLowerCase().replace(/[.-]/g, '\\$&').replaceAll('*', '.*');
      set.hosts.push(new RegExp(`^${escaped}$`));
    } else {
      throw new UsageError(`--${flag} ${JSON.stringify(rule)}: give a CIDR range (10.0.0.0/8), an IP address, a host name (api.example.com) or a pattern (*.example.com)`);
    }
  }
  return set;
}
