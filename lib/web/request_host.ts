// Which Host headers the web server accepts: a plain host and port only.

/** At most 253 characters, as a DNS name, plus a port. */
const MAX_HOST_LENGTH = 260;

const HOST_REGEXP =
  /^(?:(?:[A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

/**
 * Whether `value` is a plain `host[:port]`: a DNS name or IPv4 address, or
 * an IPv6 address in brackets, then at most a port of 0 to 65535. Deno
 * builds a request's URL by writing the Host header before the path, so
 * anything else there changes what the URL says: `evil.example/x?` moves
 * the real path into the query, and `user@evil.example` adds a user.
 */
export function isPlainHost(value: string): boolean {
  if (value.length > MAX_HOST_LENGTH) return false;
  const match = HOST_REGEXP.exec(value);
  if (match === null) return false;
  if (match[1] !== undefined && Number(match[1]) > 65535) return false;
  // What the pattern lets through must still be a host to the URL parser
  // (`[1:2]` and `1.2.3.999` are not).
  return URL.canParse(`http://${value}/`);
}
