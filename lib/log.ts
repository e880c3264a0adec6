// A small levelled logger: one fixed event phrase plus key=value fields a line.

export type LogLevel = "debug" | "info" | "warn" | "error";

/** Values a log field may carry; everything else is stringified. */
export type LogFields = Record<string, unknown>;

/** Where formatted lines go; tests pass their own to capture output. */
export type LogSink = (line: string, level: LogLevel) => void;

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  /** A logger whose lines all carry `fields` too (e.g. `worker=ab12`). */
  with(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Lowest level written; default "info". */
  level?: LogLevel;
  /** Default: standard error. */
  sink?: LogSink;
  /** Prefix each line with an ISO timestamp; default true. */
  timestamps?: boolean;
}

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Whether `name` is a level name (`debug`, `info`, `warn`, `error`). */
export function isLogLevel(name: string): name is LogLevel {
  // Own keys only: "toString" is in every object.
  return Object.hasOwn(RANK, name);
}

/** Reads a level name such as `LORICA_LOG=debug`; unknown names give "info". */
export function parseLogLevel(name: string | undefined): LogLevel {
  return name !== undefined && isLogLevel(name) ? name : "info";
}

/** Creates a logger writing `level event key=value ...` lines. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const {
    level = "info",
    sink = writeToStderr,
    timestamps = true,
  } = options;
  return makeLogger(RANK[level], sink, timestamps, {});
}

/** A logger that drops everything, for tests that do not look at logs. */
export const silentLogger: Logger = createLogger({ sink: () => {} });

function makeLogger(
  minRank: number,
  sink: LogSink,
  timestamps: boolean,
  bound: LogFields,
): Logger {
  function emit(level: LogLevel, event: string, fields: LogFields = {}) {
    if (RANK[level] < minRank) return;
    const parts = timestamps ? [new Date().toISOString()] : [];
    parts.push(level, event);
    for (const [key, value] of Object.entries({ ...bound, ...fields })) {
      if (value === undefined) continue;
      parts.push(`${key}=${formatValue(value)}`);
    }
    sink(parts.join(" "), level);
  }
  return {
    debug: (event, fields) => emit("debug", event, fields),
    info: (event, fields) => emit("info", event, fields),
    warn: (event, fields) => emit("warn", event, fields),
    error: (event, fields) => emit("error", event, fields),
    with: (fields) =>
      makeLogger(minRank, sink, timestamps, { ...bound, ...fields }),
  };
}

/** Quotes values holding spaces, quotes or control characters. */
function formatValue(value: unknown): string {
  const text = value instanceof Error
    ? value.message
    : typeof value === "string"
    ? value
    : typeof value === "object" && value !== null
    ? JSON.stringify(value)
    : String(value);
  // deno-lint-ignore no-control-regex
  return /^[^\s"=\x00-\x1f\x7f]+$/.test(text) ? text : JSON.stringify(text);
}

const encoder = new TextEncoder();

function writeToStderr(line: string) {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

/**
 * A logger whose lines can be held back, then written or dropped: what a
 * dispatcher turn logs is true only once its writes are committed.
 */
export interface HoldingLogger extends Logger {
  /** From now on, lines wait. */
  hold(): void;
  /** Writes the lines that waited, and stops holding. */
  release(): void;
  /** Forgets the lines that waited, and stops holding. */
  drop(): void;
}

/** Wraps `inner` so that its lines can be held (see {@link HoldingLogger}). */
export function holdingLogger(inner: Logger): HoldingLogger {
  let held: (() => void)[] | null = null;
  const emit = (line: () => void) => held === null ? line() : held.push(line);
  const over = (target: Logger): Logger => ({
    debug: (event, fields) => emit(() => target.debug(event, fields)),
    info: (event, fields) => emit(() => target.info(event, fields)),
    warn: (event, fields) => emit(() => target.warn(event, fields)),
    error: (event, fields) => emit(() => target.error(event, fields)),
    with: (fields) => over(target.with(fields)),
  });
  return {
    ...over(inner),
    hold() {
      held = [];
    },
    release() {
      const lines = held ?? [];
      held = null;
      for (const line of lines) line();
    },
    drop() {
      held = null;
    },
  };
}
