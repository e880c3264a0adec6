import assert from "node:assert/strict";
import {
  argsFromEnvironment,
  logLevelFromEnvironment,
  type OptionSpec,
  parseHostPort,
  parseListenAddress,
  parseNatural,
  parsePort,
  parsePositive,
  parseSubstituteUrls,
  parseSystems,
  readOptions,
  refuseConflicts,
  sourceOfUsageError,
  UsageError,
} from "../../../lib/cli/args.ts";

Deno.test("parseHostPort() reads host names, IPv4 and bracketed IPv6", () => {
  assert.deepEqual(parseHostPort("--server", "10.0.0.1:5555"), {
    hostname: "10.0.0.1",
    port: 5555,
  });
  assert.deepEqual(parseHostPort("--server", "build-server:6000"), {
    hostname: "build-server",
    port: 6000,
  });
  assert.deepEqual(parseHostPort("--server", "[::1]:5555"), {
    hostname: "::1",
    port: 5555,
  });
  assert.deepEqual(parseHostPort("--server", "[fe80::1%eth0]:5555"), {
    hostname: "fe80::1%eth0",
    port: 5555,
  });
});

Deno.test("parseHostPort() rejects a missing port or a bare IPv6 address", () => {
  for (const bad of ["10.0.0.1", "::1:5555", "host:", ":5555", "host:99999"]) {
    assert.throws(
      () => parseHostPort("--server", bad),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message.includes(JSON.stringify(bad)),
      bad,
    );
  }
});

Deno.test("parseListenAddress() takes IP addresses and localhost, and names any other value", () => {
  for (const good of ["0.0.0.0", "127.0.0.1", "::", "::1", "localhost"]) {
    assert.equal(parseListenAddress("--listen", good), good);
  }
  for (const bad of ["not-an-ip", "10.0.0", "", "[::1]", "0.0.0.0:5555"]) {
    assert.throws(
      () => parseListenAddress("--listen", bad),
      (error: Error) =>
        error instanceof UsageError &&
        error.message.startsWith(
          `Cannot use --listen ${JSON.stringify(bad)}: not an IP address`,
        ),
    );
  }
});

Deno.test("parsePort(), parsePositive() and parseNatural() name the option and the value", () => {
  assert.equal(parsePort("--log-port", "0"), 0);
  assert.throws(() => parsePort("--log-port", "80a"), /--log-port "80a"/);
  assert.equal(parsePositive("--workers", "3"), 3);
  assert.throws(() => parsePositive("--workers", "0"), /--workers "0"/);
  assert.equal(parsePositive("--limit", "30", { min: 30 }), 30);
  assert.throws(
    () => parsePositive("--limit", "29", { min: 30, why: "too short" }),
    /^UsageError: Cannot use --limit "29": less than 30 \(too short\)$/,
  );
  assert.throws(
    () => parsePositive("--workers", "9007199254740993"),
    /^UsageError: Cannot use --workers "9007199254740993": more than 9007199254740991$/,
  );
  assert.throws(
    () => parsePositive("--limit", "31", { max: 30, why: "too long" }),
    /^UsageError: Cannot use --limit "31": more than 30 \(too long\)$/,
  );
  assert.equal(parseNatural("--evaluation-timeout", "0"), 0);
  assert.equal(parseNatural("--evaluation-timeout", "10800"), 10800);
  assert.throws(
    () => parseNatural("--evaluation-timeout", "-1"),
    /--evaluation-timeout "-1": not a whole number/,
  );
});

Deno.test("argsFromEnvironment() reads boolean variables as true or false words, and rejects others by name", () => {
  const options: Record<string, OptionSpec> = {
    "no-advertise": { type: "boolean", default: false },
    "log-port": { type: "string" },
  };
  const env = (vars: Record<string, string>) => ({
    get: (key: string) => vars[key],
  });
  for (const bad of ["y", "n", "2", "enabled", "truee"]) {
    assert.throws(
      () => argsFromEnvironment(options, env({ LORICA_NO_ADVERTISE: bad })),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message.startsWith(
          `Cannot use LORICA_NO_ADVERTISE ${JSON.stringify(bad)}: `,
        ),
      bad,
    );
  }
  for (const on of ["1", "true", "yes", "on", "TRUE", "Yes", " on "]) {
    assert.deepEqual(
      argsFromEnvironment(options, env({ LORICA_NO_ADVERTISE: on })),
      ["--no-advertise"],
      on,
    );
  }
  for (const off of ["0", "false", "no", "off", "OFF", ""]) {
    assert.deepEqual(
      argsFromEnvironment(options, env({ LORICA_NO_ADVERTISE: off })),
      [],
      off,
    );
  }
  assert.deepEqual(
    argsFromEnvironment(options, env({ LORICA_LOG_PORT: "7000" })),
    ["--log-port=7000"],
  );
});

Deno.test("parseSystems() takes Guix system names and rejects anything else by name", () => {
  assert.deepEqual(parseSystems("--systems", "x86_64-linux"), [
    "x86_64-linux",
  ]);
  assert.deepEqual(parseSystems("--systems", " x86_64-linux, i586-gnu ,"), [
    "x86_64-linux",
    "i586-gnu",
  ]);
  for (const bad of ["x86_64", "x86_64-linux,arm", "", ",", "X86_64-Linux"]) {
    assert.throws(
      () => parseSystems("--systems", bad),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message.startsWith(`Cannot use --systems ${JSON.stringify(bad)}`),
      bad,
    );
  }
});

Deno.test("readOptions() takes the environment's options, lets the command line win, and refuses unknown options", () => {
  const options: Record<string, OptionSpec> = {
    port: { type: "string", default: "5555" },
    workers: { type: "string", default: "1" },
    "no-advertise": { type: "boolean", default: false },
  };
  const environment = new Map([
    ["LORICA_PORT", "6000"],
    ["LORICA_WORKERS", "4"],
    ["LORICA_NO_ADVERTISE", "yes"],
  ]);
  const given = readOptions(options, ["--workers=8"], environment);
  assert.equal(given.text("port"), "6000");
  assert.equal(given.text("workers"), "8");
  assert.equal(given.flag("no-advertise"), true);
  assert.equal(readOptions(options, [], new Map()).text("port"), "5555");
  assert.throws(
    () => readOptions(options, ["--bogus"], new Map()),
    /--bogus/,
  );
  assert.throws(
    () => readOptions(options, ["stray"], new Map()),
    /stray/,
  );
});

Deno.test("readOptions() refuses an option the command line gives twice, long or short, naming both values", () => {
  const options: Record<string, OptionSpec> = {
    port: { type: "string", short: "p", default: "5555" },
    systems: { type: "string", short: "S" },
    "no-advertise": { type: "boolean", default: false },
  };
  const refused = (args: string[], expected: string) =>
    assert.throws(
      () => readOptions(options, args, new Map()),
      (error: Error) =>
        error instanceof UsageError &&
        error.message === `Cannot read the command line: ${expected}`,
      args.join(" "),
    );
  const twice = 'option --port given twice ("8080", then "9090")';
  refused(["--port", "8080", "--port", "9090"], twice);
  refused(["--port=8080", "--port=9090"], twice);
  refused(["--port=8080", "--port", "9090"], twice);
  refused(["--port", "8080", "--port=9090"], twice);
  // The same value twice is still a mistake of the same kind.
  refused(
    ["--port=8080", "--port=8080"],
    'option --port given twice ("8080", then "8080")',
  );
  refused(
    ["-p", "8080", "--port=9090"],
    'option --port given twice ("8080" as -p, then "9090")',
  );
  refused(
    ["--port=8080", "-p9090"],
    'option --port given twice ("8080", then "9090" as -p)',
  );
  refused(
    ["-S", "x86_64-linux", "-S", "i686-linux"],
    'option --systems given twice ("x86_64-linux" as -S, then "i686-linux" as -S)',
  );
  refused(
    ["--no-advertise", "--port=1", "--no-advertise"],
    "option --no-advertise given twice",
  );
  // Each option once is fine, and so is one the command line gives over
  // the environment's.
  const given = readOptions(
    options,
    ["--port=9090", "-S", "x86_64-linux,i686-linux"],
    new Map([["LORICA_PORT", "8080"], ["LORICA_NO_ADVERTISE", "1"]]),
  );
  assert.equal(given.text("port"), "9090");
  assert.equal(given.text("systems"), "x86_64-linux,i686-linux");
  assert.equal(given.flag("no-advertise"), true);
});

// The systemd units set the server's paths and keys as these variables,
// so that an options file may give the same options on the command line.
Deno.test("readOptions() takes a path from its LORICA_ variable over the default, and the command line's over both, as no repetition", () => {
  const options: Record<string, OptionSpec> = {
    "state-directory": { type: "string" },
    cache: { type: "string", short: "c" },
    "gc-roots": { type: "string" },
    "public-key": { type: "string" },
    "git-cache": { type: "string", default: "/default/git" },
  };
  const unit = new Map([
    ["LORICA_STATE_DIRECTORY", "/var/lib/lorica"],
    ["LORICA_CACHE", "/var/cache/lorica/logs"],
    ["LORICA_GC_ROOTS", "/var/guix/gcroots/lorica"],
    ["LORICA_PUBLIC_KEY", "/run/credentials/lorica.service/signing-key.pub"],
    ["LORICA_GIT_CACHE", "/var/cache/lorica/git"],
  ]);

  const fromUnit = readOptions(options, [], unit);
  assert.equal(fromUnit.text("state-directory"), "/var/lib/lorica");
  assert.equal(fromUnit.text("cache"), "/var/cache/lorica/logs");
  assert.equal(fromUnit.text("gc-roots"), "/var/guix/gcroots/lorica");
  assert.equal(
    fromUnit.text("public-key"),
    "/run/credentials/lorica.service/signing-key.pub",
  );
  assert.equal(fromUnit.text("git-cache"), "/var/cache/lorica/git");
  assert.equal(fromUnit.given("cache"), true);

  const replaced = readOptions(
    options,
    ["--cache=/srv/cache", "--gc-roots", "/srv/roots", "--public-key=/k"],
    unit,
  );
  assert.equal(replaced.text("cache"), "/srv/cache");
  assert.equal(replaced.text("gc-roots"), "/srv/roots");
  assert.equal(replaced.text("public-key"), "/k");
  assert.equal(replaced.text("state-directory"), "/var/lib/lorica");
  assert.equal(
    readOptions(options, ["-c", "/srv/c"], unit).text("cache"),
    "/srv/c",
  );

  const defaults = readOptions(options, [], new Map());
  assert.equal(defaults.text("cache"), undefined);
  assert.equal(defaults.given("cache"), false);
  assert.equal(defaults.text("git-cache"), "/default/git");

  // Twice on the command line is still twice, whatever the environment.
  assert.throws(
    () => readOptions(options, ["--cache=/a", "-c", "/b"], unit),
    /^UsageError: Cannot read the command line: option --cache given twice \("\/a", then "\/b" as -c\)$/,
  );
});

Deno.test("readOptions() refuses an empty value by name, unless the option's default is empty", () => {
  const options: Record<string, OptionSpec> = {
    "worker-keys": { type: "string" },
    "state-directory": { type: "string", short: "d" },
    "substitute-urls": { type: "string", default: "" },
  };
  for (
    const args of [
      ["--worker-keys="],
      ["--worker-keys", ""],
      ["--state-directory="],
      ["-d", ""],
    ]
  ) {
    assert.throws(
      () => readOptions(options, args, new Map()),
      (error: Error) =>
        error instanceof UsageError &&
        /^Cannot use --(worker-keys|state-directory) "": an empty value/
          .test(error.message),
      args.join(" "),
    );
  }
  assert.equal(
    readOptions(options, ["--substitute-urls="], new Map()).text(
      "substitute-urls",
    ),
    "",
  );
  // An empty variable is an unset one, as before.
  const environment = new Map([["LORICA_WORKER_KEYS", ""]]);
  assert.equal(
    readOptions(options, [], environment).text("worker-keys"),
    undefined,
  );
});

Deno.test("refuseConflicts() names both options and the value that means nothing, from the command line or the environment", () => {
  const options: Record<string, OptionSpec> = {
    "no-publish": { type: "boolean", default: false },
    "publish-port": { type: "string", default: "5557" },
  };
  const conflicts = {
    "no-publish": { with: ["publish-port"], because: "nothing listens" },
  };
  const refused = (args: string[], env = new Map<string, string>()) =>
    assert.throws(
      () => refuseConflicts(readOptions(options, args, env), conflicts),
      (error: Error) =>
        error instanceof UsageError &&
        error.message ===
          'Cannot use --publish-port "6000" with --no-publish: nothing listens',
      args.join(" "),
    );
  refused(["--no-publish", "--publish-port=6000"]);
  refused(["--no-publish"], new Map([["LORICA_PUBLISH_PORT", "6000"]]));
  // A default is not a choice: no conflict.
  refuseConflicts(readOptions(options, ["--no-publish"], new Map()), conflicts);
  refuseConflicts(
    readOptions(
      options,
      ["--publish-port=6000"],
      new Map([["LORICA_NO_PUBLISH", "no"]]),
    ),
    conflicts,
  );
});

Deno.test("sourceOfUsageError() names the environment variable that set the option a message names, unless the command line gave it, long or short", () => {
  const options: Record<string, OptionSpec> = {
    workers: { type: "string" },
    "workers-max": { type: "string" },
  };
  const environment = new Map([["LORICA_WORKERS", "0"]]);
  const message = 'Cannot use --workers "0": not a positive integer';
  assert.equal(
    sourceOfUsageError(message, options, [], environment),
    `${message} (set by LORICA_WORKERS)`,
  );
  assert.equal(
    sourceOfUsageError(message, options, ["--workers=0"], environment),
    message,
  );
  assert.equal(sourceOfUsageError(message, options, [], new Map()), message);
  // A short alias is the option given on the command line too.
  const aliased: Record<string, OptionSpec> = {
    "publish-port": { type: "string", short: "p" },
    "no-publish": { type: "boolean", short: "s" },
  };
  const port = new Map([["LORICA_PUBLISH_PORT", "5557"]]);
  const bad = 'Cannot use --publish-port "x": not a port number (0-65535)';
  for (const args of [["-p", "x"], ["-px"], ["-sp", "x"]]) {
    assert.equal(
      sourceOfUsageError(bad, aliased, args, port),
      bad,
      args.join(" "),
    );
  }
  assert.equal(
    sourceOfUsageError(bad, aliased, ["-s"], port),
    `${bad} (set by LORICA_PUBLISH_PORT)`,
  );
  // --workers-max is another option, not --workers.
  const other = 'Cannot use --workers-max "x": not a positive integer';
  assert.equal(sourceOfUsageError(other, options, [], environment), other);
});

Deno.test("logLevelFromEnvironment() reads LORICA_LOG, info when unset or empty, and names any other value", () => {
  assert.equal(logLevelFromEnvironment(new Map()), "info");
  assert.equal(logLevelFromEnvironment(new Map([["LORICA_LOG", ""]])), "info");
  for (const level of ["debug", "info", "warn", "error"]) {
    assert.equal(
      logLevelFromEnvironment(new Map([["LORICA_LOG", level]])),
      level,
    );
  }
  for (const value of ["warning", "DEBUG", "toString"]) {
    assert.throws(
      () => logLevelFromEnvironment(new Map([["LORICA_LOG", value]])),
      (error: Error) =>
        error instanceof UsageError &&
        error.message ===
          `Cannot use LORICA_LOG ${
            JSON.stringify(value)
          }: not a log level (debug, info, warn or error)`,
      value,
    );
  }
});

Deno.test("parseSubstituteUrls() takes http, https and file URLs separated by spaces, and names the first other word", () => {
  assert.deepEqual(parseSubstituteUrls("--substitute-urls", ""), []);
  assert.deepEqual(
    parseSubstituteUrls(
      "--substitute-urls",
      " https://substitutes.example.org  http://10.0.0.1:8080 file:///srv/nars ",
    ),
    [
      "https://substitutes.example.org",
      "http://10.0.0.1:8080",
      "file:///srv/nars",
    ],
  );
  for (
    const [value, bad] of [
      ["substitutes.example.org", "substitutes.example.org"],
      [
        "https://ok.example.org ftp://nars.example.org",
        "ftp://nars.example.org",
      ],
    ]
  ) {
    assert.throws(
      () => parseSubstituteUrls("--substitute-urls", value),
      (error: Error) =>
        error instanceof UsageError &&
        error.message ===
          `Cannot use --substitute-urls ${JSON.stringify(value)}: ${
            JSON.stringify(bad)
          } is not an http, https or file URL`,
      value,
    );
  }
  const commas = "https://a.example.org,https://b.example.org";
  assert.throws(
    () => parseSubstituteUrls("--substitute-urls", commas),
    (error: Error) =>
      error instanceof UsageError &&
      error.message ===
        `Cannot use --substitute-urls "${commas}": "${commas}" holds a comma (separate the URLs with spaces)`,
  );
});
