// The systemd units in etc/systemd: systemd's own verifier accepts them,
// they start the right program with options that program knows, and every
// option they set can be replaced from their environment file.

import assert from "node:assert/strict";
import { REPO } from "./tree_copy.ts";
import {
  invocation,
  optionVariables,
  settings,
} from "./_systemd_invocation.ts";

const UNITS = {
  server: `${REPO}/etc/systemd/lorica-server.service`,
  worker: `${REPO}/etc/systemd/lorica-worker.service`,
};

/** `$CREDENTIALS_DIRECTORY` of the units, as systemd makes it. */
const CREDENTIALS = "/run/credentials/lorica.service";

/**
 * The options a unit gives its program, by long name, whether on its
 * ExecStart line or as `LORICA_*` variables, with no options file.
 */
function unitOptions(unitText: string): Map<string, string> {
  const { argv, env } = invocation(unitText, "", CREDENTIALS);
  const options = optionVariables(env);
  for (const word of argv) {
    const option = /^--([a-z-]+)=(.*)$/.exec(word);
    if (option !== null) options.set(option[1], option[2]);
  }
  return options;
}

const analyzeAvailable = (() => {
  try {
    return new Deno.Command("systemd-analyze", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

/** Runs systemd-analyze verify on units whose ExecStart binary is a stub. */
async function verify(unitTexts: Record<string, string>) {
  const dir = await Deno.makeTempDir({ prefix: "lorica-units-" });
  try {
    const stub = `${dir}/stub`;
    await Deno.writeTextFile(stub, "#!/bin/sh\nexit 0\n");
    await Deno.chmod(stub, 0o755);
    const paths = [];
    for (const [name, text] of Object.entries(unitTexts)) {
      const path = `${dir}/${name}`;
      await Deno.writeTextFile(
        path,
        text.replace(/\/usr\/local\/bin\/lorica-(server|worker)/g, stub),
      );
      paths.push(path);
    }
    const result = await new Deno.Command("systemd-analyze", {
      args: ["verify", ...paths],
      env: { SYSTEMD_LOG_COLOR: "0" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const decoder = new TextDecoder();
    return {
      code: result.code,
      // Only complaints about our files matter (not the host's own units).
      complaints:
        (decoder.decode(result.stdout) + decoder.decode(result.stderr))
          .split("\n").filter((line) => line.includes(dir)),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "systemd-analyze verify accepts both units without a warning",
  ignore: !analyzeAvailable, // needs systemd-analyze (Debian: systemd)
  async fn() {
    const result = await verify({
      "lorica-server.service": await Deno.readTextFile(UNITS.server),
      "lorica-worker.service": await Deno.readTextFile(UNITS.worker),
    });
    assert.deepEqual(result.complaints, []);
    assert.equal(result.code, 0);
  },
});

Deno.test({
  name: "systemd-analyze verify does complain about a broken unit (control)",
  ignore: !analyzeAvailable,
  async fn() {
    const broken = (await Deno.readTextFile(UNITS.server)).replace(
      "ProtectSystem=strict",
      "ProtectSystem=very",
    );
    const result = await verify({ "lorica-server.service": broken });
    assert.equal(result.complaints.length, 1, result.complaints.join("\n"));
  },
});

for (const [program, unit] of Object.entries(UNITS)) {
  Deno.test(`lorica-${program}.service starts lorica-${program} with options it accepts`, async () => {
    const text = await Deno.readTextFile(unit);
    const pairs = settings(text);
    const words = invocation(text, "", CREDENTIALS).argv;
    assert.equal(words[0], `/usr/local/bin/lorica-${program}`);

    const help = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${REPO}/${program}.ts`, "--help"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(help.success, new TextDecoder().decode(help.stderr));
    const helpText = new TextDecoder().decode(help.stdout);
    const envFile = await Deno.readTextFile(
      `${REPO}/etc/lorica/${program}.env`,
    );
    const options = settings(envFile).filter(([key]) =>
      key.endsWith("_OPTIONS")
    ).flatMap(([, value]) => value.replace(/"/g, "").split(/\s+/));
    assert.ok(options.length > 0, "the .env example sets *_OPTIONS");
    const flags = [
      ...words,
      ...options,
      ...[...unitOptions(text).keys()].map((name) => `--${name}`),
    ]
      .filter((word) => word.startsWith("--"))
      .map((word) => word.replace(/=.*$/, ""));
    for (const flag of flags) assert.match(flag, /^--[a-z][a-z-]*$/);
    assert.ok(flags.length >= 2);
    for (const flag of flags) {
      assert.ok(
        new RegExp(`(^|[\\s,])${flag}([=\\s]|$)`, "m").test(helpText),
        `${flag} is not in ${program}.ts --help`,
      );
    }

    // The programs refuse an option given twice: neither the example's
    // options nor a commented-out alternative may repeat the unit's.
    const alternatives = settings(
      envFile.replace(/^#(?=[A-Z_]+_OPTIONS=)/gm, ""),
    ).filter(([key]) => key.endsWith("_OPTIONS"));
    for (const [, value] of alternatives) {
      const given = [...words, ...value.replace(/"/g, "").split(/\s+/)]
        .filter((word) => word.startsWith("--"))
        .map((word) => word.replace(/=.*$/, ""));
      assert.deepEqual(
        given.filter((flag, i) => given.indexOf(flag) !== i),
        [],
        `${program}.env repeats an option: ${value}`,
      );
    }

    const get = (key: string) =>
      pairs.filter(([k]) => k === key).map(([, v]) => v);
    assert.deepEqual(get("NoNewPrivileges"), ["yes"]);
    assert.deepEqual(get("ProtectSystem"), ["strict"]);
    assert.deepEqual(get("PrivateTmp"), ["yes"]);
    assert.deepEqual(get("KillSignal"), ["SIGTERM"]);
    // The stop's SIGTERM to the program alone, not to the guix build (or
    // publish) it runs: a build killed so would be reported failed.
    assert.deepEqual(get("KillMode"), ["mixed"]);
    // AF_NETLINK: Deno.networkInterfaces(), for DNS-SD (see the test below).
    assert.deepEqual(get("RestrictAddressFamilies"), [
      "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ]);
    assert.ok(get("EnvironmentFile")[0].endsWith(`/etc/lorica/${program}.env`));
    // V8 compiles code at run time: W^X enforcement would kill the process.
    assert.deepEqual(get("MemoryDenyWriteExecute"), []);
  });
}

/**
 * What each unit gives its program, as its ExecStart line used to: moving
 * these into variables changes nothing where no options file replaces them.
 */
const UNIT_OPTIONS: Record<keyof typeof UNITS, Record<string, string>> = {
  server: {
    database: "/var/lib/lorica/lorica.db",
    "state-directory": "/var/lib/lorica",
    cache: "/var/cache/lorica/logs",
    "gc-roots": "/var/guix/gcroots/lorica",
    "public-key": `${CREDENTIALS}/signing-key.pub`,
    "private-key": `${CREDENTIALS}/signing-key.sec`,
  },
  worker: {
    "public-key": `${CREDENTIALS}/signing-key.pub`,
    "private-key": `${CREDENTIALS}/signing-key.sec`,
  },
};

/**
 * Runs the program of a unit's `argv` from source, with the `LORICA_*`
 * variables of `env` only: the unit's HOME and PATH would send Deno's own
 * cache to /var/cache.
 */
async function runUnitProgram(
  program: keyof typeof UNITS,
  { argv, env }: { argv: string[]; env: Map<string, string> },
  cwd?: string,
): Promise<{ code: number; stderr: string }> {
  const variables = Object.fromEntries(
    [...env].filter(([name]) => name.startsWith("LORICA_")),
  );
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO}/${program}.ts`, ...argv.slice(1)],
    env: { ...variables, LORICA_LOG: "error" },
    cwd,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  return {
    code: result.code,
    stderr: new TextDecoder().decode(result.stderr),
  };
}

for (const [program, unit] of Object.entries(UNITS)) {
  const name = program as keyof typeof UNITS;
  const variable = `LORICA_${program.toUpperCase()}_OPTIONS`;

  Deno.test(`lorica-${program}.service gives lorica-${program} the paths and keys it always gave`, async () => {
    assert.deepEqual(
      Object.fromEntries(unitOptions(await Deno.readTextFile(unit))),
      UNIT_OPTIONS[name],
    );
  });

  Deno.test(`every option lorica-${program}.service sets may be given again in ${variable}, without a refusal`, async () => {
    const text = await Deno.readTextFile(unit);
    const given = [...unitOptions(text).keys()].map((option) =>
      `--${option}=/srv/elsewhere/${option}`
    );
    assert.ok(given.length > 0);
    const run = await runUnitProgram(
      name,
      invocation(
        text,
        `${variable}="${[...given, "--help"].join(" ")}"\n`,
        CREDENTIALS,
      ),
    );
    assert.equal(run.code, 0, run.stderr);
  });
}

Deno.test("a --cache in server.env's LORICA_SERVER_OPTIONS is the one lorica-server.service's server uses", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-unit-options-" });
  try {
    await Deno.writeTextFile(`${dir}/afile`, "");
    // Every path the unit sets is replaced, so that nothing is written
    // outside `dir`; the cache is one the server cannot use, and so names.
    const options = [
      `--database=${dir}/farm.db`,
      `--state-directory=${dir}/state`,
      `--gc-roots=${dir}/roots`,
      `--cache=${dir}/afile/logs`,
    ];
    const run = await runUnitProgram(
      "server",
      invocation(
        await Deno.readTextFile(UNITS.server),
        `LORICA_SERVER_OPTIONS="${options.join(" ")}"\n`,
        CREDENTIALS,
      ),
      dir,
    );
    assert.equal(run.code, 2, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`Cannot use --cache "${dir}/afile/logs": Not a directory`),
    );
    // The command line gave it, not the unit's LORICA_CACHE.
    assert.doesNotMatch(run.stderr, /set by/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Why the account and GC roots test cannot run here, if it cannot. */
const setupMissing = (() => {
  for (const tool of ["systemd-sysusers", "systemd-tmpfiles"]) {
    try {
      new Deno.Command(tool, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
    } catch {
      return `no ${tool} (Debian: systemd)`;
    }
  }
  // Giving the directory to the account is a chown.
  return Deno.uid() === 0 ? undefined : "needs root to chown";
})();

Deno.test({
  name:
    `lorica-server.service runs as the account of etc/sysusers.d, and etc/tmpfiles.d makes its --gc-roots for it${
      setupMissing ? ` (skipped: ${setupMissing})` : ""
    }`,
  ignore: setupMissing !== undefined,
  async fn() {
    const pairs = settings(await Deno.readTextFile(UNITS.server));
    const get = (key: string) =>
      pairs.filter(([k]) => k === key).map(([, v]) => v);
    // A dynamic user could not own a directory outside StateDirectory.
    assert.deepEqual(get("DynamicUser"), []);
    const [user] = get("User");
    assert.deepEqual(get("Group"), [user]);
    const roots = unitOptions(await Deno.readTextFile(UNITS.server)).get(
      "gc-roots",
    )!;
    // A real directory the daemon walks: it follows no link to one.
    assert.match(roots, /^\/var\/guix\/gcroots\/[^/]+$/);
    assert.ok(
      get("ReadWritePaths").some((paths) =>
        paths.split(/\s+/).some((path) => path.replace(/^-/, "") === roots)
      ),
      `${roots} is not in ReadWritePaths`,
    );

    const root = await Deno.makeTempDir({ prefix: "lorica-sysroot-" });
    try {
      await Deno.mkdir(`${root}/etc`);
      for (
        const [tool, args] of [
          ["systemd-sysusers", [`${REPO}/etc/sysusers.d/lorica.conf`]],
          [
            "systemd-tmpfiles",
            ["--create", `${REPO}/etc/tmpfiles.d/lorica.conf`],
          ],
        ] as const
      ) {
        const result = await new Deno.Command(tool, {
          args: [`--root=${root}`, ...args],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(
          result.success,
          `${tool}: ${new TextDecoder().decode(result.stderr)}`,
        );
      }
      const account = (await Deno.readTextFile(`${root}/etc/passwd`))
        .split("\n").map((line) => line.split(":"))
        .find((fields) => fields[0] === user);
      assert.ok(account, `no account ${user} in ${root}/etc/passwd`);
      const info = await Deno.lstat(`${root}${roots}`);
      assert.ok(info.isDirectory);
      assert.equal(info.uid, Number(account[2]));
      assert.equal(info.gid, Number(account[3]));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

const straceAvailable = (() => {
  try {
    return new Deno.Command("strace", {
      args: ["-V"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
})();

// The server (advertising) and the worker (browsing) list the machine's
// interfaces with Deno.networkInterfaces(), which glibc's getifaddrs does over
// a netlink socket. A unit that forbids that family makes the call throw
// "Address family not supported by protocol" and the program stop at start.
Deno.test({
  name:
    "every address family Deno.networkInterfaces() opens is allowed by both units",
  ignore: !straceAvailable, // needs strace (Debian: strace)
  async fn() {
    const traced = await new Deno.Command("strace", {
      args: [
        "-f",
        "-e",
        "trace=socket",
        Deno.execPath(),
        "eval",
        "Deno.networkInterfaces()",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const trace = new TextDecoder().decode(traced.stderr);
    assert.ok(traced.success, trace);
    const families = new Set(
      [...trace.matchAll(/socket\((AF_[A-Z0-9]+),/g)].map((m) => m[1]),
    );
    assert.ok(families.has("AF_NETLINK"), trace);
    for (const unit of Object.values(UNITS)) {
      const allowed = settings(await Deno.readTextFile(unit))
        .filter(([key]) => key === "RestrictAddressFamilies")
        .flatMap(([, value]) => value.split(/\s+/));
      for (const family of families) {
        assert.ok(allowed.includes(family), `${unit} forbids ${family}`);
      }
    }
  },
});
