// The error route handlers throw for client mistakes; app.ts turns it into a response.

/** An error whose message is meant for the HTTP client, with its status. */
export class HttpError extends Error {
  /** The HTTP status code, 4xx for client mistakes. */
  readonly status: number;

  constructor(status: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HttpError";
    this.status = status;
  }
}

/** Quotes a value for an error message, truncating long values. */
export function quoteValue(value: string): string {
  return JSON.stringify(value.length > 100 ? value.slice(0, 100) + "…" : value);
}
