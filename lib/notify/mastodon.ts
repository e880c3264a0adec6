// Posts a status on a Mastodon instance (POST /api/v1/statuses).

/** A Mastodon account to post from (Cuirass's %mastodon-instance-*). */
export interface MastodonAccount {
  /** Base URL of the instance, e.g. https://social.example. */
  instanceUrl: string;
  /** Access token with the write:statuses scope. */
  token: string;
  /** A label for logs (Cuirass's instance name); never sent. */
  name?: string;
}

/** Options of postMastodonStatus. */
export interface MastodonOptions {
  /** "public", "unlisted", "private" or "direct"; default "unlisted". */
  visibility?: string;
  /**
   * Sent as Idempotency-Key so that a retried post appears once; use a key
   * stable across retries of one notification.
   */
  idempotencyKey?: string;
  /** Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Injected for tests; default the global fetch. */
  fetch?: typeof fetch;
}

/** The instance refused the status or could not be reached. */
export class MastodonError extends Error {
  constructor(
    message: string,
    /** HTTP status, null when no answer came. */
    readonly status: number | null,
    /** Network errors, 429 and 5xx are worth retrying. */
    readonly transient: boolean,
  ) {
    super(message);
    this.name = "MastodonError";
  }
}

/** Mastodon's default limit on the length of a status. */
export const MAX_STATUS_CHARS = 500;

/**
 * Publishes `status` (cut to 500 characters) and returns the new status's id.
 * @throws {MastodonError} on refusals, timeouts and network failures; the
 * token never appears in the message.
 */
export async function postMastodonStatus(
  account: MastodonAccount,
  status: string,
  options: MastodonOptions = {},
): Promise<string> {
  const {
    visibility = "unlisted",
    idempotencyKey,
    timeoutMs = 30_000,
    signal,
    fetch: fetchImpl = fetch,
  } = options;
  const url = statusesUrl(account.instanceUrl);
  const body = new URLSearchParams({
    status: truncate(status, MAX_STATUS_CHARS),
    visibility,
  });
  const headers: Record<string, string> = {
    Authorization: `Bearer ${account.token}`,
    Accept: "application/json",
    "Content-Type": "application/x-www-form-urlencoded",
  };
  if (idempotencyKey !== undefined) headers["Idempotency-Key"] = idempotencyKey;

  const signals = [AbortSignal.timeout(timeoutMs)];
  if (signal) signals.push(signal);
  let response: Response;
  try {
    response = await fetchImpl(url, {
      method: "POST",
      headers,
      body,
      signal: AbortSignal.any(signals),
      redirect: "manual",
    });
  } catch (error) {
    throw new MastodonError(
      `Cannot post to Mastodon at ${JSON.stringify(url)}: ${
        (error as Error).message
      }`,
      null,
      true,
    );
  }
  const text = await readBounded(response, 64 * 1024);
  if (!response.ok) {
    throw new MastodonError(
      `Cannot post to Mastodon at ${
        JSON.stringify(url)
      }: HTTP ${response.status}${
        text ? ` ${JSON.stringify(text.slice(0, 200))}` : ""
      }`,
      response.status,
      response.status === 429 || response.status >= 500,
    );
  }
  try {
    const id = (JSON.parse(text) as { id?: unknown }).id;
    return typeof id === "string" || typeof id === "number" ? String(id) : "";
  } catch {
    return "";
  }
}

function statusesUrl(instanceUrl: string): string {
  let base: URL;
  try {
    base = new URL(instanceUrl);
  } catch {
    throw new MastodonError(
      `Cannot use Mastodon instance ${
        JSON.stringify(instanceUrl.slice(0, 200))
      }: not a URL`,
      null,
      false,
    );
  }
  if (base.protocol !== "https:" && base.protocol !== "http:") {
    throw new MastodonError(
      `Cannot use Mastodon instance ${
        JSON.stringify(instanceUrl.slice(0, 200))
      }: expected http or https`,
      null,
      false,
    );
  }
  return `${base.origin}${base.pathname.replace(/\/+$/, "")}/api/v1/statuses`;
}

/** Cuts to `max` code points, ending with "…" when cut. */
function truncate(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : chars.slice(0, max - 1).join("") + "…";
}

async function readBounded(response: Response, max: number): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < max) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // A broken body still leaves the status code to judge by.
  } finally {
    await reader.cancel().catch(() => {});
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return new TextDecoder().decode(all.subarray(0, max));
}
