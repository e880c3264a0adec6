// What a `--database` value names, and how to show it without its password.

/** A `--database` value that names no database Lorica can open. */
export class DatabaseNameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatabaseNameError";
  }
}

const URL_SCHEME_REGEXP = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/**
 * Which backend a `--database` value names: a `postgres://` or
 * `postgresql://` URL, or a conninfo string naming a database
 * (`dbname=cuirass host=/var/run/postgresql`), is PostgreSQL; anything else
 * is a SQLite file name.
 * @throws {DatabaseNameError} for a URL of any other scheme (`mysql://`),
 * or a conninfo string without `dbname=` (`host=/var/run/postgresql`),
 * either of which would otherwise become a file of that name.
 */
export function storeBackend(database: string): "postgres" | "sqlite" {
  const scheme = URL_SCHEME_REGEXP.exec(database)?.[1].toLowerCase();
  if (scheme === "postgres" || scheme === "postgresql") return "postgres";
  if (scheme !== undefined) {
    throw new DatabaseNameError(
      `Cannot open database ${redactDatabase(database)}: unknown scheme ${
        JSON.stringify(`${scheme}://`)
      } (expected a SQLite file name, a postgres:// URL or "dbname=... host=...")`,
    );
  }
  // A conninfo string: key=value pairs, one of them naming a database.
  if (/^\s*[a-z_]+\s*=/.test(database) && /\bdbname\s*=/.test(database)) {
    return "postgres";
  }
  // libpq would take it, its database defaulting to the user's name (so
  // Cuirass does); as a file name it would start a new, empty farm in a
  // SQLite file called "host=... user=...".
  const key = CONNINFO_START_REGEXP.exec(database)?.[1];
  if (key !== undefined) {
    throw new DatabaseNameError(
      `Cannot open database ${
        redactDatabase(database)
      }: a conninfo string (it starts with ${
        JSON.stringify(`${key}=`)
      }) must name its database with dbname=`,
    );
  }
  return "sqlite";
}

/** The start of a conninfo string: a key libpq knows, then "=". */
const CONNINFO_START_REGEXP =
  /^\s*(host|hostaddr|port|user|password|passfile|connect_timeout|sslmode|application_name|options|service)\s*=/;

/**
 * `database` quoted for a message or a log, with any password replaced by
 * `***`: the one of a URL's user information (`postgres://u:PW@host/db`),
 * and `password=` in a conninfo string or a URL's query. Long values are
 * truncated.
 */
export function redactDatabase(database: string): string {
  const hidden = URL_SCHEME_REGEXP.test(database)
    ? redactUrl(database)
    : database.replace(
      /(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)/gi,
      "$1***",
    );
  return JSON.stringify(
    hidden.length > 200 ? hidden.slice(0, 200) + "…" : hidden,
  );
}

/**
 * What `message`, an error about `database`, says once a leading
 * "Cannot <action> <database>: " naming it is taken away: for a caller
 * whose own message already names the database (`Cannot use --database
 * "..."`), so that the value is not quoted twice. A message naming it
 * elsewhere, or not at all, is returned as it is.
 */
export function databaseFault(message: string, database: string): string {
  const shown = redactDatabase(database);
  const match = /^Cannot [A-Za-z]+(?: [A-Za-z]+)* /.exec(message);
  if (match === null) return message;
  const rest = message.slice(match[0].length);
  return rest.startsWith(`${shown}: `) ? rest.slice(shown.length + 2) : message;
}

/**
 * `url` with the password of its user information and of its query
 * replaced. The user information is taken to end at the last "@" of the
 * whole text, so that a password holding an unescaped "/", "?" or "@" is
 * hidden too (a query holding an "@" hides a little more than needed).
 */
function redactUrl(url: string): string {
  const start = url.indexOf("://") + 3;
  const at = url.lastIndexOf("@");
  const colon = url.indexOf(":", start);
  const userinfo = at > start && colon !== -1 && colon < at
    ? `${url.slice(0, colon)}:***${url.slice(at)}`
    : url;
  return userinfo.replace(/([?&]password=)[^&#]*/gi, "$1***");
}
