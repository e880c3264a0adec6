// A throw-away PostgreSQL cluster of a test's own, for tests that stop,
// restart or reconfigure the server (which a shared one must not suffer):
// Debian's binaries, a temporary data directory, a quiet loopback port, a
// socket directory of its own. As root the server runs as `postgres`.

import { quietPort } from "../../_ports.ts";

/** The newest installed PostgreSQL's bin directory, or null. */
export function postgresBinaries(): string | null {
  try {
    const versions = [...Deno.readDirSync("/usr/lib/postgresql")]
      .map((entry) => entry.name)
      .filter((name) => /^\d+$/.test(name))
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) {
      const bin = `/usr/lib/postgresql/${version}/bin`;
      try {
        Deno.statSync(`${bin}/initdb`);
        return bin;
      } catch {
        // Client only: try an older one.
      }
    }
  } catch {
    // No PostgreSQL at all.
  }
  return null;
}

/** A running cluster of one test. */
export interface OwnPostgres {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  /** `pg_ctl stop` in `mode` ("fast" or "immediate"). */
  stop(mode: "fast" | "immediate"): Promise<void>;
  start(): Promise<void>;
  /**
   * Runs each statement through psql as the superuser, in one session but
   * each in its own transaction; returns the output.
   */
  psql(...statements: string[]): Promise<string>;
  /** Stops the server if it runs, and removes its directory. */
  remove(): Promise<void>;
}

/** Starts a fresh cluster; throws, naming the step, if it cannot. */
export async function startOwnPostgres(bin: string): Promise<OwnPostgres> {
  const root = await Deno.makeTempDir({ prefix: "lorica-pg-" });
  const asRoot = Deno.uid() === 0;
  if (asRoot) {
    await Deno.chmod(root, 0o755);
    await run(["chown", "postgres:postgres", root], false);
  }
  const port = quietPort();
  const data = `${root}/data`;
  const options = [
    `-c listen_addresses=127.0.0.1`,
    `-c port=${port}`,
    `-c unix_socket_directories=${root}`,
    `-c fsync=off`,
  ].join(" ");

  async function run(argv: string[], asPostgres = asRoot): Promise<string> {
    const command = asPostgres
      ? new Deno.Command("su", {
        args: [
          "postgres",
          "-s",
          "/bin/sh",
          "-c",
          argv.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" "),
        ],
        stdout: "piped",
        stderr: "piped",
      })
      : new Deno.Command(argv[0], {
        args: argv.slice(1),
        stdout: "piped",
        stderr: "piped",
      });
    const result = await command.output();
    const out = new TextDecoder().decode(result.stdout);
    if (!result.success) {
      throw new Error(
        `Cannot run "${argv.join(" ")}": ${
          new TextDecoder().decode(result.stderr).trim()
        }`,
      );
    }
    return out;
  }

  const pgCtl = (...args: string[]) =>
    run([`${bin}/pg_ctl`, "-D", data, ...args]);
  let running = false;
  const cluster: OwnPostgres = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    async stop(mode) {
      await pgCtl("-m", mode, "-w", "stop");
      running = false;
    },
    async start() {
      await pgCtl("-l", `${root}/server.log`, "-o", options, "-w", "start");
      running = true;
    },
    psql: (...statements) =>
      run([
        `${bin}/psql`,
        "-X",
        "-q",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-p",
        String(port),
        "-U",
        "postgres",
        "-d",
        "postgres",
        ...statements.flatMap((sql) => ["-c", sql]),
      ]),
    async remove() {
      if (running) await cluster.stop("immediate").catch(() => {});
      await Deno.remove(root, { recursive: true });
    },
  };
  try {
    await run([
      `${bin}/initdb`,
      "-D",
      data,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--no-locale",
    ]);
    await cluster.start();
  } catch (error) {
    await cluster.remove().catch(() => {});
    throw error;
  }
  return cluster;
}
