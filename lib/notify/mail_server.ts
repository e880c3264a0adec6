// The `server` field of an email notification: an smtp or sendmail URL.

/** TLS use of an SMTP server. */
export type SmtpTls = "none" | "starttls" | "implicit";

/** Where a message goes, as parsed from the specification. */
export type MailServer =
  | {
    kind: "smtp";
    hostname: string;
    port: number;
    tls: SmtpTls;
  }
  | { kind: "sendmail"; path: string };

/** A server URL that names no usable mailer. */
export class MailServerError extends Error {
  constructor(message: string, readonly url: string) {
    super(message);
    this.name = "MailServerError";
  }
}

/** The sendmail program used for `sendmail://` without a path. */
export const DEFAULT_SENDMAIL = "/usr/sbin/sendmail";

/**
 * Reads `smtp://HOST[:PORT]` (plain, port 25), `smtp+starttls://HOST[:PORT]`
 * (STARTTLS required, port 587), `smtps://HOST[:PORT]` (TLS, port 465) and
 * `sendmail://[/PATH]` (default /usr/sbin/sendmail), like Cuirass, which
 * picks sendmail for URLs starting with "sendmail" and SMTP otherwise.
 * @throws {MailServerError} for other schemes, credentials or a bad port.
 */
export function parseMailServer(url: string): MailServer {
  const shown = JSON.stringify(
    url.replace(/\/\/[^@/]*@/, "//…@").slice(0, 200),
  );
  if (url.startsWith("sendmail:")) {
    const path = url.replace(/^sendmail:(\/\/)?/, "").replace(/[?#].*$/, "");
    if (path !== "" && !path.startsWith("/")) {
      throw new MailServerError(
        `Cannot use mail server ${shown}: the sendmail path must be absolute (sendmail:///usr/sbin/sendmail)`,
        url,
      );
    }
    return { kind: "sendmail", path: path === "" ? DEFAULT_SENDMAIL : path };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new MailServerError(
      `Cannot use mail server ${shown}: not a URL (expected smtp://HOST:PORT or sendmail://)`,
      url,
    );
  }
  const schemes: Record<string, [SmtpTls, number]> = {
    "smtp:": ["none", 25],
    "smtp+starttls:": ["starttls", 587],
    "smtps:": ["implicit", 465],
  };
  const scheme = schemes[parsed.protocol];
  if (scheme === undefined) {
    throw new MailServerError(
      `Cannot use mail server ${shown}: unknown scheme (smtp, smtp+starttls, smtps or sendmail)`,
      url,
    );
  }
  if (parsed.username !== "" || parsed.password !== "") {
    throw new MailServerError(
      `Cannot use mail server ${shown}: SMTP authentication is not supported; relay through a local server or sendmail`,
      url,
    );
  }
  const hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  if (hostname === "") {
    throw new MailServerError(`Cannot use mail server ${shown}: no host`, url);
  }
  return {
    kind: "smtp",
    hostname,
    port: parsed.port === "" ? scheme[1] : Number(parsed.port),
    tls: scheme[0],
  };
}
