import assert from "node:assert/strict";
import {
  readSpecificationFile,
  readSpecificationFileOrGuix,
  readSpecifications,
  readSpecificationsWithGuix,
  SpecError,
  specificationFromJson,
} from "../../../lib/spec/read_spec.ts";
import { Guix } from "../../../lib/guix/guix_command.ts";
import { silentLogger } from "../../../lib/log.ts";
import type { Child } from "../../../lib/process.ts";
import { GUIX as FAKE_GUIX } from "../../fake-guix/test_env.ts";
import type { Channel, Specification } from "../../../lib/store/types.ts";

const FIXTURE = new URL("../../fixtures/specs/cuirass.scm", import.meta.url);

const GUIX: Channel = {
  name: "guix",
  url: "https://git.guix.gnu.org/guix.git",
  branch: "master",
  commit: null,
  introduction: {
    commit: "9edb3f66fd807b096b48283debdcddccfea34bad",
    signer: "BBB0 2DDF 2CEA F6A8 0D1D  E643 A2A0 6DF2 A33A 54FA",
  },
};
const NONGUIX: Channel = {
  name: "nonguix",
  url: "https://gitlab.com/nonguix/nonguix",
  branch: "master",
  commit: null,
  introduction: {
    commit: "897c1a470da759236cc11798f4e0a5f7d4d59fbc",
    signer: "2A39 3FFF 68F4 EF7A 3D29  12AF 6F51 20A0 22FB B2D5",
  },
};

function spec(fields: Partial<Specification>): Specification {
  return {
    name: "",
    build: { type: "all", params: [] },
    channels: [GUIX],
    buildOutputs: [],
    notifications: [],
    period: 0,
    priority: 9,
    systems: ["x86_64-linux"],
    isActive: true,
    ...fields,
  };
}

Deno.test("readSpecificationFile() reads a realistic specification file", async () => {
  const specs = await readSpecificationFile(FIXTURE.pathname);
  assert.deepEqual(specs, [
    spec({
      name: "master",
      priority: 2,
      systems: ["x86_64-linux", "i686-linux"],
      period: 60,
    }),
    spec({
      name: "tools",
      build: { type: "packages", params: ["hello", "strace", "perf"] },
      buildOutputs: [
        { job: "hello.*", type: "archive", output: "out", path: "" },
        { job: "strace.*", type: "archive", output: "out", path: "bin/strace" },
      ],
      notifications: [
        {
          type: "email",
          from: "cuirass@example.org",
          to: "admins@example.org",
          server: "sendmail:///usr/sbin/sendmail",
        },
        { type: "mastodon" },
      ],
      systems: ["aarch64-linux"],
    }),
    spec({
      name: "nonguix",
      build: { type: "channels", params: ["nonguix"] },
      channels: [NONGUIX, GUIX],
      priority: 5,
      isActive: false,
    }),
    spec({
      name: "manifests",
      build: { type: "manifests", params: ["etc/manifest.scm"] },
      channels: [GUIX, {
        name: "extras",
        url: "https://example.org/extras.git",
        branch: "master",
        commit: "0123456789abcdef0123456789abcdef01234567",
        introduction: null,
      }],
      period: 3600,
    }),
    spec({
      name: "custom",
      build: { type: "custom", params: ["(gnu ci)", "(my jobs)"] },
    }),
    spec({ name: "defaults" }),
  ]);
});

Deno.test("readSpecifications() accepts each build form", async (t) => {
  const cases: [string, string, string[]][] = [
    ["'all", "all", []],
    ["'guix", "guix", []],
    ["'system-tests", "system-tests", []],
    [`'(packages "a" "b")`, "packages", ["a", "b"]],
    [`(cons 'packages (list "a"))`, "packages", ["a"]],
    ["'(channels guix)", "channels", ["guix"]],
    [`'(manifests "m.scm")`, "manifests", ["m.scm"]],
    ["'(custom (gnu ci))", "custom", ["(gnu ci)"]],
    [`\`(packages ,@(list "x" "y"))`, "packages", ["x", "y"]],
  ];
  for (const [form, type, params] of cases) {
    await t.step(form, () => {
      const [read] = readSpecifications(
        `(list (specification (name "s") (build ${form})))`,
        "b.scm",
      );
      assert.deepEqual(read.build, { type, params });
    });
  }
});

const FAILURES: [string, string, string][] = [
  [
    "a system named twice",
    `(list (specification (name "x")\n (systems '("x86_64-linux" "i686-linux" "x86_64-linux"))))`,
    'at 2:2: field "systems" names "x86_64-linux" twice',
  ],
  [
    "custom build with an empty module name",
    `(list (specification (name "x") (build '(custom ()))))`,
    'field "build" has an invalid custom entry []',
  ],
  [
    "unsupported form",
    `(list\n (specification\n  (name "x")\n    (build (system-test foo))))`,
    'Cannot read specification "x.scm" at 4:12: unsupported form (system-test foo)',
  ],
  [
    "syntax error",
    `(list (specification (name "x"))`,
    'Cannot read specification "x.scm" at 1:33: unexpected end of input: list at 1:1 is not closed',
  ],
  [
    "priority out of range",
    `(list (specification (name "x")\n (priority 12)))`,
    'at 2:2: field "priority" is not an integer from 0 to 9: 12',
  ],
  [
    "empty systems",
    `(list (specification (name "x") (systems '())))`,
    'field "systems" is not a non-empty list of strings',
  ],
  [
    "systems not strings",
    `(list (specification (name "x") (systems '(x86_64-linux))))`,
    'field "systems" is not a non-empty list of strings',
  ],
  [
    "empty name",
    `(list (specification (name "")))`,
    'field "name" is not a non-empty string',
  ],
  [
    "missing name",
    `(list (specification (build 'all)))`,
    'at 1:7: field "name" is not a non-empty string',
  ],
  [
    "unknown field",
    `(list (specification (name "x") (colour "red")))`,
    'at 1:33: unknown specification field "colour"',
  ],
  [
    "unbound variable",
    `(list (specification (name "x") (channels %my-channels)))`,
    'at 1:33: unbound variable "%my-channels"',
  ],
  [
    "not a list of specifications",
    `(specification (name "x"))`,
    "the last form is not a list of specifications",
  ],
  [
    "only definitions",
    `(define x 1)`,
    "the file does not end with a list of specifications",
  ],
  [
    "unknown build type",
    `(list (specification (name "x") (build 'everything)))`,
    'field "build" is not a build type: everything',
  ],
  [
    "bad fingerprint",
    `(list (specification (name "x") (channels (list (channel (name 'c) (url "u") (introduction (make-channel-introduction "c" (openpgp-fingerprint "XYZ")))))))) `,
    'fingerprint "XYZ" is not 40 hexadecimal digits',
  ],
  [
    "duplicate names",
    `(list (specification (name "x")) (specification (name 'x)))`,
    'two specifications are named "x"',
  ],
  [
    "build output job no regular expression",
    `(list (specification (name "x") (build-outputs (list (build-output (job "hello(") (type "archive") (output "out") (path ""))))))`,
    'build output job "hello(" is not a regular expression',
  ],
  [
    "build output path out of its output",
    `(list (specification (name "x") (build-outputs (list (build-output (job "hello") (type "archive") (output "out") (path "../other/secret"))))))`,
    'build output path "../other/secret" climbs out of the output with ".."',
  ],
  [
    "long form is truncated",
    `(list (specification (name "x") (build (gnu-system-test "${
      "a".repeat(200)
    }"))))`,
    `unsupported form (gnu-system-test "${"a".repeat(42)}...`,
  ],
];

Deno.test("readSpecifications() rejects what it cannot read", async (t) => {
  for (const [name, text, message] of FAILURES) {
    await t.step(name, () => {
      assert.throws(() => readSpecifications(text, "x.scm"), (error) => {
        assert.ok(error instanceof SpecError, String(error));
        assert.equal(error.name, "SpecError");
        assert.equal(error.file, "x.scm");
        assert.ok(
          error.message.includes(message),
          `${JSON.stringify(error.message)} lacks ${JSON.stringify(message)}`,
        );
        assert.ok(
          error.message.startsWith(
            `Cannot read specification "x.scm" at ${error.line}:${error.column}: `,
          ),
        );
        return true;
      });
    });
  }
});

Deno.test("readSpecifications() reports the line and column of the form", () => {
  assert.throws(
    () =>
      readSpecifications(
        `(list\n  (specification\n    (name "x")\n    (build (system-test foo))))`,
        "x.scm",
      ),
    (error) =>
      error instanceof SpecError && error.line === 4 && error.column === 12,
  );
});

Deno.test("specificationFromJson() reads Cuirass's JSON shape", () => {
  assert.deepEqual(
    specificationFromJson({
      name: "tools",
      build: { packages: ["hello"] },
      channels: [
        {
          name: "guix",
          url: "https://git.guix.gnu.org/guix.git",
          branch: "master",
          commit: false,
        },
        { name: "x", url: "https://x", branch: "main", commit: "abc1234" },
      ],
      "build-outputs": [{ job: "j", type: "archive", output: "out", path: "" }],
      notifications: [{ type: "mastodon" }],
      period: 30,
      priority: 1,
      systems: ["x86_64-linux"],
    }),
    spec({
      name: "tools",
      build: { type: "packages", params: ["hello"] },
      channels: [GUIX, {
        name: "x",
        url: "https://x",
        branch: "main",
        commit: "abc1234",
        introduction: null,
      }],
      buildOutputs: [{ job: "j", type: "archive", output: "out", path: "" }],
      notifications: [{ type: "mastodon" }],
      period: 30,
      priority: 1,
    }),
  );
  assert.deepEqual(specificationFromJson({ name: "d" }), spec({ name: "d" }));
  assert.deepEqual(
    specificationFromJson({ name: "c", build: "custom" }).build,
    { type: "custom", params: [] },
  );
  assert.deepEqual(
    specificationFromJson({ name: "c", build: { custom: ["( gnu  ci )"] } })
      .build,
    { type: "custom", params: ["(gnu ci)"] },
  );
});

Deno.test("specificationFromJson() validates like the file reader", async (t) => {
  const cases: [unknown, RegExp][] = [
    [null, /not an object/],
    [{}, /field "name" is not a non-empty string/],
    [
      { name: "x", priority: 10 },
      /field "priority" is not an integer from 0 to 9: 10/,
    ],
    [{ name: "x", priority: 1.5 }, /field "priority"/],
    // JSON.parse reads 1e309 as Infinity, which JSON.stringify writes as
    // null: the message named a value the file does not hold.
    [
      JSON.parse('{"name": "x", "period": 1e309}'),
      /field "period" is not a non-negative integer: Infinity$/,
    ],
    [
      JSON.parse('{"name": "x", "priority": -1e309}'),
      /field "priority" is not an integer from 0 to 9: -Infinity$/,
    ],
    [{ name: "x", systems: [] }, /field "systems"/],
    [{ name: "x", systems: [1] }, /field "systems"/],
    [
      { name: "x", systems: ["aarch64-linux", "aarch64-linux"] },
      /field "systems" names "aarch64-linux" twice/,
    ],
    [{ name: "x", build: "everything" }, /unknown build type "everything"/],
    [{ name: "x", build: { packages: [1] } }, /field "build"/],
    [
      { name: "x", build: { custom: ["gnu ci"] } },
      /custom module "gnu ci" that is not a module name/,
    ],
    [{ name: "x", build: { custom: ["(gnu ci"] } }, /custom module "\(gnu ci"/],
    [{ name: "x", build: { custom: ["()"] } }, /custom module "\(\)"/],
    [{ name: "x", build: { custom: ['(gnu "ci")'] } }, /custom module/],
    [{ name: "x", channels: [{ name: "g" }] }, /field "url"/],
    [{ name: "x", notifications: [{ type: "sms" }] }, /unknown entry/],
    // A field the reader does not know was dropped, its value lost: the
    // Scheme spelling "is-active?" left the specification active.
    [
      { name: "x", "is-active?": false },
      /unknown specification field "is-active\?"/,
    ],
    [
      { name: "x", buildOutputs: [] },
      /unknown specification field "buildOutputs"/,
    ],
    [
      { name: "x", channels: [{ name: "c", url: "file:///c", brnch: "dev" }] },
      /channels\[0\]: unknown channel field "brnch"/,
    ],
    [
      { name: "x", "build-outputs": [{ job: "j", type: "t", out: "doc" }] },
      /unknown build-output field "out"/,
    ],
    [
      {
        name: "x",
        "build-outputs": [{
          job: "j",
          type: "t",
          output: "out",
          path: "/etc/passwd",
        }],
      },
      /build output path "\/etc\/passwd" is absolute, not within the output/,
    ],
    [
      {
        name: "x",
        "build-outputs": [{ job: "[j", type: "t", output: "out", path: "" }],
      },
      /build output job "\[j" is not a regular expression/,
    ],
    [
      {
        name: "x",
        notifications: [{
          type: "email",
          from: "a@x",
          to: "b@x",
          server: "smtp://127.0.0.1",
          cc: "c@x",
        }],
      },
      /unknown email notification field "cc"/,
    ],
    [
      { name: "x", notifications: [{ type: "mastodon", account: "me" }] },
      /unknown mastodon notification field "account"/,
    ],
  ];
  for (const [value, message] of cases) {
    await t.step(JSON.stringify(value), () => {
      assert.throws(() => specificationFromJson(value), (error) => {
        assert.ok(error instanceof SpecError);
        assert.match(error.message, /^Cannot read specification from JSON: /);
        assert.match(error.message, message);
        return true;
      });
    });
  }
});

Deno.test("spec files are held to the API's names and systems", async (t) => {
  // A file is read without the admin API's checks: a name with a slash
  // made the specification unreachable at /jobset/NAME, and a system such
  // as "../x" named a path outside the evaluation's directory.
  const channel = `(list (channel (name 'c) (url "file:///tmp/c")))`;
  const cases: [string, string, string][] = [
    ["slash", `(name "team/hello")`, `"team/hello"`],
    ["markup", `(name "<b>x</b>")`, `"<b>x</b>"`],
    ["control character", `(name "a\tb")`, `"a\\tb"`],
    ["long name", `(name "${"n".repeat(101)}")`, "longer than 100"],
    ["system path", `(name "x") (systems '("../x"))`, `"../x"`],
    [
      "system markup",
      `(name "x") (systems '("x86_64-linux<"))`,
      `"x86_64-linux<"`,
    ],
  ];
  for (const [label, fields, offending] of cases) {
    await t.step(`Scheme: ${label}`, () => {
      const text = `(list (specification ${fields} (channels ${channel})))`;
      assert.throws(() => readSpecifications(text, "x.scm"), (error) => {
        assert.ok(error instanceof SpecError, String(error));
        assert.ok(error.message.includes(offending), error.message);
        return true;
      });
    });
  }
  await t.step("JSON", () => {
    for (const value of [{ name: "a/b" }, { name: "x", systems: ["a/b"] }]) {
      assert.throws(
        () => specificationFromJson(value),
        (error) => error instanceof SpecError && /"a\/b"/.test(error.message),
      );
    }
  });
});

Deno.test("SpecError.kind tells forms Guile could evaluate from bad values", async (t) => {
  const cases: [string, string][] = [
    [`(list (specification (name "x") (build (my-build))))`, "unsupported"],
    [`(list (specification (name "x") (channels %mine)))`, "unsupported"],
    [`(list (specification (name "x")`, "syntax"],
    [`(list (specification (name "x") (priority 10)))`, "invalid"],
  ];
  for (const [text, kind] of cases) {
    await t.step(text, () => {
      assert.throws(
        () => readSpecifications(text, "k.scm"),
        (error) => error instanceof SpecError && error.kind === kind,
      );
    });
  }
});

Deno.test("two channels of one name, or two specifications, are refused", async (t) => {
  // Polling pins each channel at the commit fetched for its name: the
  // second "c" was evaluated at the first one's commit. In a JSON file, the
  // second "a" silently replaced the first in the database.
  const twice = (url: string) => `(channel (name 'c) (url "${url}"))`;
  await t.step("Scheme channels", () => {
    assert.throws(
      () =>
        readSpecifications(
          `(list (specification (name "x") (channels (list ${
            twice("file:///a")
          } ${twice("file:///b")}))))`,
          "x.scm",
        ),
      /at 1:33: field "channels" names channel "c" twice/,
    );
  });
  await t.step("JSON channels", () => {
    const channel = (url: string) => ({ name: "c", url });
    assert.throws(
      () =>
        specificationFromJson({
          name: "x",
          channels: [channel("file:///a"), channel("file:///b")],
        }),
      /field "channels" names channel "c" twice/,
    );
  });
  await t.step("JSON file", async () => {
    const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
    try {
      await Deno.writeTextFile(
        `${dir}/twice.json`,
        JSON.stringify([{ name: "a" }, { name: "b" }, { name: "a" }]),
      );
      await assert.rejects(
        readSpecificationFile(`${dir}/twice.json`),
        /twice\.json" entry 2: two specifications are named "a"/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

Deno.test("readSpecificationFile() reads JSON files, with line:column errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
  try {
    await Deno.writeTextFile(
      `${dir}/specs.json`,
      JSON.stringify([{ name: "a", build: { packages: ["hello"] } }, {
        name: "b",
      }]),
    );
    const specs = await readSpecificationFile(`${dir}/specs.json`);
    assert.deepEqual(specs.map((s) => s.name), ["a", "b"]);
    assert.deepEqual(specs[0].build, { type: "packages", params: ["hello"] });

    await Deno.writeTextFile(`${dir}/bad.json`, `[\n  {"name": "a",,}\n]`);
    await assert.rejects(
      readSpecificationFile(`${dir}/bad.json`),
      (error) =>
        error instanceof SpecError && error.line === 2 && error.column === 16,
    );
    // V8 gives no position for a text cut short: the error named 1:1.
    await Deno.writeTextFile(`${dir}/cut.json`, `[\n  {"name": "a"},\n  [`);
    await assert.rejects(
      readSpecificationFile(`${dir}/cut.json`),
      (error) =>
        error instanceof SpecError && error.line === 3 &&
        error.column === 4 && error.message.includes(" at 3:4: "),
    );
    await Deno.writeTextFile(`${dir}/invalid.json`, `[{"name": "a"}, {}]`);
    await assert.rejects(
      readSpecificationFile(`${dir}/invalid.json`),
      /entry 1: field "name" is not a non-empty string/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readSpecificationFile() refuses a file that is not UTF-8, naming where", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
  const latin1 = (text: string) =>
    Uint8Array.from(text, (c) => c.charCodeAt(0));
  try {
    // A Latin-1 file: the byte 0xE9 was read as U+FFFD, and the error
    // named a variable no one wrote, or a mangled value was kept.
    for (
      const [name, bytes, where, byte] of [
        [
          "Scheme",
          latin1(`(list\n  (specification (name "caf\xe9")))`),
          "2:28",
          "e9",
        ],
        [
          "JSON",
          latin1(`[{"name": "a",\n  "systems": ["\xe9"]}]`),
          "2:16",
          "e9",
        ],
        // An "é" in UTF-8, then a stray continuation byte.
        [
          "Scheme after UTF-8",
          latin1(`(list (specification (name "\xc3\xa9\x80")))`),
          "1:30",
          "80",
        ],
      ] as const
    ) {
      await t.step(name, async () => {
        const file = `${dir}/spec.${name === "JSON" ? "json" : "scm"}`;
        await Deno.writeFile(file, bytes);
        await assert.rejects(readSpecificationFile(file), (error) => {
          assert.ok(error instanceof SpecError, String(error));
          assert.equal(error.kind, "syntax");
          assert.equal(
            error.message,
            `Cannot read specification ${
              JSON.stringify(file)
            } at ${where}: byte 0x${byte} is not valid UTF-8`,
          );
          return true;
        });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readSpecificationFileOrGuix() asks guix repl for Scheme beyond the subset", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
  try {
    const file = `${dir}/fancy.scm`;
    await Deno.writeTextFile(
      file,
      `(list (specification (name "x") (systems (map car '(("x86_64-linux"))))))`,
    );
    const calls: string[][] = [];
    const answer = (stdout: string, code: number, stderr = "") =>
      new Guix({
        logger: silentLogger,
        spawn: (argv): Child => {
          calls.push(argv);
          return {
            pid: 0,
            stdout: new Blob([stdout]).stream(),
            stderr: new Blob([stderr]).stream(),
            stdin: null,
            status: Promise.resolve({ code, signal: null }),
            kill() {},
          };
        },
      });
    // Guile evaluated it and printed the subset.
    const specs = await readSpecificationFileOrGuix(
      file,
      answer(
        `(list (specification (name "x") (systems '("x86_64-linux"))))\n`,
        0,
      ),
    );
    assert.deepEqual(specs.map((s) => s.systems), [["x86_64-linux"]]);
    assert.deepEqual(calls[0].slice(0, 3), ["guix", "repl", "--"]);
    assert.match(calls[0][3], /\/lib\/spec\/print_specs\.scm$/);
    assert.equal(calls[0][4], file);

    // Guile failed too (or the fake guix refuses to run the script): the
    // subset reader's located error is reported.
    await assert.rejects(
      readSpecificationFileOrGuix(
        file,
        answer("", 1, "guix repl: error: cannot run\n"),
      ),
      (error) =>
        error instanceof SpecError && error.line === 1 && error.column === 42,
    );
    await assert.rejects(
      readSpecificationsWithGuix(
        file,
        answer("", 1, `${file}:0:7: Unbound variable: foo\n`),
      ),
      /through guix repl at 1:8: Unbound variable: foo/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the fake guix refuses to run print_specs.scm (documented)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
  try {
    const file = `${dir}/fancy.scm`;
    await Deno.writeTextFile(file, `(list (specification (name "x")))`);
    const guix = new Guix({
      command: FAKE_GUIX,
      env: { FAKE_GUIX_DENO: Deno.execPath() },
      logger: silentLogger,
    });
    await assert.rejects(
      readSpecificationsWithGuix(file, guix),
      /Cannot read specification .* through guix repl at 0:0: .*cannot run/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the notifications of docs/deployment.md are read as the reader reads specifications", async () => {
  const doc = await Deno.readTextFile(
    new URL("../../../docs/deployment.md", import.meta.url),
  );
  const example = doc.match(/```scheme\n(\(notifications[\s\S]*?)\n```/)?.[1];
  assert.ok(example, "no notifications example in docs/deployment.md");
  const [read] = readSpecifications(
    `(list (specification (name "doc") (build 'all)
       (channels (list (channel (name 'guix) (url "file:///srv/guix.git"))))
       ${example}))`,
    "deployment.md",
  );
  assert.deepEqual(read.notifications, [
    {
      type: "email",
      from: "Lorica <ci@farm.example>",
      to: "dev@example.org, ops@example.org",
      server: "smtp://mail.example.org:25",
    },
    { type: "mastodon" },
  ]);
});

Deno.test("specification readers refuse text holding a NUL character, naming the field", () => {
  const scheme = `(list (specification (name "guix")
  (channels (list (channel (name 'guix) (url "file:///srv/g\0.git"))))))`;
  assert.throws(
    () => readSpecifications(scheme, "specs.scm"),
    new SpecError(
      `Cannot read specification "specs.scm" at 1:1: specification "guix" field "channels[0].url" holds a NUL character (U+0000): "file:///srv/g\\u0000.git"`,
      { file: "specs.scm", line: 1, column: 1 },
    ),
  );
  assert.throws(
    () =>
      specificationFromJson({
        name: "guix",
        "build-outputs": [{ job: "h\0", type: "archive" }],
      }),
    {
      name: "SpecError",
      message:
        `Cannot read specification from JSON: field "build-outputs[0].job" holds a NUL character (U+0000): "h\\u0000"`,
    },
  );
});

Deno.test("a channel git would refuse at every poll is refused when read, naming the value", async (t) => {
  // Polling gives the URL, branch and commit to git, which refuses these:
  // read as they were, each failed every evaluation of its specification.
  const cases: [string, string, string][] = [
    ["tag as commit", `(commit "v1.4.0")`, `"v1.4.0"`],
    ["commit as option", `(commit "--all")`, `"--all"`],
    ["branch as option", `(branch "-evil")`, `"-evil"`],
    ["branch with ..", `(branch "a..b")`, `"a..b"`],
    ["empty branch", `(branch "")`, `""`],
  ];
  for (const [label, field, offending] of cases) {
    await t.step(`Scheme: ${label}`, () => {
      const text = `(list (specification (name "x") (channels (list
  (channel (name 'c) (url "file:///tmp/c") ${field})))))`;
      assert.throws(() => readSpecifications(text, "x.scm"), (error) => {
        assert.ok(error instanceof SpecError, String(error));
        assert.match(
          error.message,
          /^Cannot read specification "x.scm" at 2:3: channel "c" has a /,
        );
        assert.ok(error.message.endsWith(`: ${offending}`), error.message);
        return true;
      });
    });
    await t.step(`JSON: ${label}`, () => {
      const [, key, value] = /^\((\w+) (".*")\)$/.exec(field)!;
      const channel = {
        name: "c",
        url: "file:///tmp/c",
        [key]: JSON.parse(value),
      };
      assert.throws(
        () => specificationFromJson({ name: "x", channels: [channel] }),
        (error) => {
          assert.ok(error instanceof SpecError, String(error));
          assert.ok(error.message.endsWith(`: ${offending}`), error.message);
          return true;
        },
      );
    });
  }
  await t.step("URL as option", () => {
    assert.throws(
      () =>
        specificationFromJson({
          name: "x",
          channels: [{ name: "c", url: "--upload-pack=touch /tmp/x" }],
        }),
      /channel "c" has a URL git cannot be given: "--upload-pack=touch \/tmp\/x"/,
    );
  });
  await t.step("a full or abbreviated commit id is kept", () => {
    const [read] = readSpecifications(
      `(list (specification (name "x") (channels (list
  (channel (name 'c) (url "file:///tmp/c") (branch "release/1.x")
    (commit "0123abc"))))))`,
      "x.scm",
    );
    assert.equal(read.channels[0].commit, "0123abc");
    assert.equal(read.channels[0].branch, "release/1.x");
  });
});

Deno.test("an email notification the sender cannot use is refused when read, naming the value", async (t) => {
  // Read as they were, these were refused at every notification instead.
  const cases: [string, Record<string, string>, string][] = [
    ["unknown scheme", { server: "imap://127.0.0.1" }, `"imap://127.0.0.1"`],
    [
      "credentials",
      { server: "smtp://me:secret@127.0.0.1" },
      "SMTP authentication is not supported",
    ],
    ["relative sendmail", { server: "sendmail:usr/sbin/sendmail" }, "absolute"],
    ["bad sender", { from: "ci" }, `field "from" holds "ci"`],
    ["bad recipient", { to: "a@x, bob" }, `field "to" holds "bob"`],
    ["no recipient", { to: " , " }, `field "to" names no recipient`],
  ];
  for (const [label, change, offending] of cases) {
    const sink = {
      from: "ci@example.org",
      to: "dev@example.org",
      server: "smtp://127.0.0.1:25",
      ...change,
    };
    await t.step(`Scheme: ${label}`, () => {
      const text = `(list (specification (name "x") (notifications (list
  (email (from ${JSON.stringify(sink.from)}) (to ${JSON.stringify(sink.to)})
         (server ${JSON.stringify(sink.server)}))))))`;
      assert.throws(() => readSpecifications(text, "x.scm"), (error) => {
        assert.ok(error instanceof SpecError, String(error));
        assert.match(
          error.message,
          /^Cannot read specification "x.scm" at 2:3: email /,
        );
        assert.ok(error.message.includes(offending), error.message);
        return true;
      });
    });
    await t.step(`JSON: ${label}`, () => {
      assert.throws(
        () =>
          specificationFromJson({
            name: "x",
            notifications: [{ type: "email", ...sink }],
          }),
        (error) => {
          assert.ok(error instanceof SpecError, String(error));
          assert.ok(error.message.includes(offending), error.message);
          return true;
        },
      );
    });
  }
  await t.step("usable sinks are kept as written", () => {
    const sink = {
      type: "email",
      from: "Guix CI <ci@example.org>",
      to: "a@example.org, Zoë <z@example.org>",
      server: "sendmail://",
    };
    assert.deepEqual(
      specificationFromJson({ name: "x", notifications: [sink] })
        .notifications,
      [sink],
    );
  });
});

Deno.test("spec files are refused what /admin refuses: no channel, a period over a year", async (t) => {
  // Accepted from a file, a specification without a channel failed at
  // every evaluation, where /admin refused it at once.
  const dir = await Deno.makeTempDir({ prefix: "lorica-spec-" });
  try {
    const cases: [string, string, string, RegExp][] = [
      [
        "Scheme, empty list",
        "empty.scm",
        `(list (specification (name "lonely") (channels '())))`,
        /^Cannot read specification ".*empty\.scm" at 1:38: specification "lonely" field "channels" is empty: at least one channel is needed$/,
      ],
      [
        "Scheme, (list)",
        "list.scm",
        `(list (specification (name "lonely") (channels (list))))`,
        /"lonely" field "channels" is empty: at least one channel is needed$/,
      ],
      [
        "JSON",
        "specs.json",
        JSON.stringify([{ name: "fine" }, { name: "lonely", channels: [] }]),
        /^Cannot read specification ".*specs\.json" entry 1: specification "lonely" field "channels" is empty: at least one channel is needed$/,
      ],
      [
        "Scheme, period",
        "period.scm",
        `(list (specification (name "slow") (period 99999999)))`,
        /field "period" is over a year \(31622400 seconds\): 99999999$/,
      ],
      [
        "JSON, period",
        "period.json",
        JSON.stringify({ name: "slow", period: 31622401 }),
        /field "period" is over a year \(31622400 seconds\): 31622401$/,
      ],
    ];
    for (const [label, file, text, message] of cases) {
      await t.step(label, async () => {
        const path = `${dir}/${file}`;
        await Deno.writeTextFile(path, text);
        await assert.rejects(() => readSpecificationFile(path), (error) => {
          assert.ok(error instanceof SpecError, String(error));
          assert.match(error.message, message);
          return true;
        });
      });
    }
    await t.step("a year is taken", () => {
      assert.equal(
        specificationFromJson({ name: "slow", period: 31622400 }).period,
        31622400,
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
