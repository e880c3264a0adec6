import assert from "node:assert/strict";
import {
  decodeMessage,
  DEFAULT_MAX_PAYLOAD_BYTES,
  encodeMessage,
  MAX_HOST_LENGTH,
  MAX_SYSTEM_LENGTH,
  MAX_WORKER_NAME_LENGTH,
  MAX_WORKER_SYSTEMS,
  type Message,
  ProtocolError,
} from "../../../lib/protocol/messages.ts";
import { SexpSyntaxError } from "../../../lib/sexp/read.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DRV = "/gnu/store/abc…-hello-2.12.1.drv";
const WORKER = {
  name: "q3ZfA9kL",
  address: "10.0.0.7",
  machine: "builder1",
  systems: ["x86_64-linux", "i686-linux"],
  lastSeen: 0,
};

// The wire examples of cuirass.md 1.3, plus the messages it lists without
// an example, each with the value it decodes to.
const WIRE: [string, Message][] = [
  ["(worker-request-info)", { type: "worker-request-info" }],
  [
    '(server-info (worker-address "10.0.0.7") (log-port 5556) (publish-port 5557))',
    {
      type: "server-info",
      workerAddress: "10.0.0.7",
      logPort: 5556,
      publishPort: 5557,
    },
  ],
  [
    '(server-info (worker-address "10.0.0.7") (log-port 5556) (publish-port #f))',
    {
      type: "server-info",
      workerAddress: "10.0.0.7",
      logPort: 5556,
      publishPort: null,
    },
  ],
  [
    '(worker-ready (worker (name "q3ZfA9kL") (address "10.0.0.7") (machine "builder1") (systems ("x86_64-linux" "i686-linux")) (last-seen 0)))',
    { type: "worker-ready", worker: WORKER },
  ],
  [
    '(worker-ping (worker (name "q3ZfA9kL") (address "10.0.0.7") (machine "builder1") (systems ("x86_64-linux" "i686-linux")) (last-seen 0)))',
    { type: "worker-ping", worker: WORKER },
  ],
  [
    '(worker-request-work "q3ZfA9kL")',
    { type: "worker-request-work", name: "q3ZfA9kL" },
  ],
  ["(no-build)", { type: "no-build" }],
  [
    `(build (drv "${DRV}") (priority 9) (timeout 72000) (max-silent 3600) (timestamp #f) (system "x86_64-linux"))`,
    {
      type: "build",
      drv: DRV,
      priority: 9,
      timeout: 72000,
      maxSilent: 3600,
      timestamp: null,
      system: "x86_64-linux",
    },
  ],
  [
    `(build-started (drv "${DRV}") (worker "q3ZfA9kL"))`,
    { type: "build-started", drv: DRV, worker: "q3ZfA9kL" },
  ],
  [
    `(build-succeeded (drv "${DRV}") (url "http://10.0.0.7:5558") (log #f))`,
    {
      type: "build-succeeded",
      drv: DRV,
      url: "http://10.0.0.7:5558",
      log: null,
    },
  ],
  [
    `(build-failed (drv "${DRV}") (url "http://10.0.0.7:5558") (log #f))`,
    { type: "build-failed", drv: DRV, url: "http://10.0.0.7:5558", log: null },
  ],
];

Deno.test("decodeMessage() and encodeMessage() round-trip the wire examples", async (t) => {
  for (const [wire, message] of WIRE) {
    await t.step(wire.slice(0, 40), () => {
      assert.deepEqual(decodeMessage(encoder.encode(wire)), message);
      assert.equal(decoder.decode(encodeMessage(message)), wire);
    });
  }
});

Deno.test("decodeMessage() reads a timestamp and a log when present", () => {
  const build = decodeMessage(encoder.encode(
    '(build (drv "/d") (priority 0) (timeout 1) (max-silent 2) (timestamp 1700000000) (system "s"))',
  ));
  assert.equal(build.type === "build" && build.timestamp, 1700000000);
  const done = decodeMessage(
    encoder.encode('(build-failed (drv "/d") (url "u") (log "/l.gz"))'),
  );
  assert.equal(done.type === "build-failed" && done.log, "/l.gz");
});

Deno.test("decodeMessage() ignores fields after the known ones", () => {
  assert.deepEqual(
    decodeMessage(encoder.encode(
      '(build-started (drv "/d") (worker "w") (lorica-extra 1) "x")',
    )),
    { type: "build-started", drv: "/d", worker: "w" },
  );
  assert.deepEqual(
    decodeMessage(encoder.encode('(no-build (reason "idle"))')),
    { type: "no-build" },
  );
});

Deno.test("encodeMessage() writes no trailing newline", () => {
  const bytes = encodeMessage({ type: "no-build" });
  assert.equal(decoder.decode(bytes), "(no-build)");
});

/** A worker-ready payload, written by hand: the encoder checks nothing. */
function workerReady(worker: Partial<typeof WORKER>): string {
  return decoder.decode(
    encodeMessage({ type: "worker-ready", worker: { ...WORKER, ...worker } }),
  );
}

const MALFORMED: [string, string | Uint8Array, RegExp][] = [
  ["empty payload", "", /payload is empty/],
  ["unbalanced list", "(worker-request-info", /end of input/],
  ["stray close", ")", /unexpected "\)"/],
  ["invalid UTF-8", new Uint8Array([0x28, 0xff, 0x29]), /UTF-8/],
  ["not a list", '"hello"', /expected a list starting with a symbol/],
  ["empty list", "()", /expected a list starting with a symbol/],
  ["unknown tag", "(worker-dance)", /unknown tag "worker-dance"/],
  [
    "systems not strings",
    '(worker-ready (worker (name "n") (address "a") (machine "m") (systems (1 2)) (last-seen 0)))',
    /^Cannot decode message "worker-ready": field "systems" is not a list of strings$/,
  ],
  [
    "fields out of order",
    '(server-info (log-port 1) (worker-address "a") (publish-port #f))',
    /field "worker-address" is expected here, found "\(log-port 1\)"/,
  ],
  [
    "missing field",
    '(build-started (drv "/d"))',
    /"build-started": field "worker" is missing/,
  ],
  [
    "string where integer",
    '(build (drv "/d") (priority "9") (timeout 1) (max-silent 2) (timestamp #f) (system "s"))',
    /field "priority" is not an integer in range: "\\"9\\""$/,
  ],
  [
    "huge integer",
    '(build (drv "/d") (priority 99999999999999999999) (timeout 1) (max-silent 2) (timestamp #f) (system "s"))',
    /field "priority" is not an integer in range: "99999999999999999999"$/,
  ],
  [
    "port out of range",
    '(server-info (worker-address "a") (log-port 70000) (publish-port #f))',
    /field "log-port" is not a port number: 70000$/,
  ],
  [
    "port 0",
    '(server-info (worker-address "a") (log-port 1) (publish-port 0))',
    /field "publish-port" is not a port number: 0$/,
  ],
  [
    "negative request id",
    '(worker-request-work "w" (request-id -3))',
    /field "request-id" is not a non-negative integer: "-3"$/,
  ],
  [
    "huge request id",
    "(no-build (request-id 99999999999999999999))",
    /field "request-id" is not a non-negative integer: "99999999999999999999"$/,
  ],
  [
    "#t where #f or a port",
    '(server-info (worker-address "a") (log-port 1) (publish-port #t))',
    /field "publish-port" is not an integer/,
  ],
  [
    "field with extra value",
    '(build-started (drv "/d" "/e") (worker "w"))',
    /field "drv" is expected here/,
  ],
  [
    "bare name not a string",
    "(worker-request-work name)",
    /field "name" is not a string/,
  ],
  ["worker missing", "(worker-ping)", /field "worker" is missing/],
  [
    "NUL in a worker name",
    '(worker-request-work "w\u0000x")',
    /field "name" has a control character/,
  ],
  [
    "escape in a system",
    '(worker-ping (worker (name "n") (address "a") (machine "m") (systems ("x86_64-linux\u001b")) (last-seen 0)))',
    /field "systems" has a control character/,
  ],
  [
    "empty worker name",
    workerReady({ name: "" }),
    /^Cannot decode message "worker-ready": field "name" is empty$/,
  ],
  [
    "empty name asking for work",
    '(worker-request-work "")',
    /"worker-request-work": field "name" is empty/,
  ],
  [
    "empty worker starting a build",
    '(build-started (drv "/d") (worker ""))',
    /"build-started": field "worker" is empty/,
  ],
  [
    "worker name too long",
    workerReady({ name: "N".repeat(MAX_WORKER_NAME_LENGTH + 1) }),
    /field "name" has 65 characters, more than 64: "\\"NNNN/,
  ],
  [
    "name too long asking for work",
    `(worker-request-work "${"N".repeat(10_000)}")`,
    /field "name" has 10000 characters, more than 64/,
  ],
  [
    "machine too long",
    workerReady({ machine: "m".repeat(MAX_HOST_LENGTH + 1) }),
    /field "machine" has 256 characters, more than 255/,
  ],
  [
    "address too long",
    workerReady({ address: "a".repeat(MAX_HOST_LENGTH + 1) }),
    /field "address" has 256 characters, more than 255/,
  ],
  [
    "too many systems",
    workerReady({
      systems: Array.from({ length: 2_000 }, (_, i) => `s${i}-linux`),
    }),
    /field "systems" has 2000 entries, more than 32: "\(\\"s0-linux\\" /,
  ],
  [
    "system name too long",
    workerReady({ systems: ["x".repeat(MAX_SYSTEM_LENGTH + 1)] }),
    /field "systems" has 65 characters, more than 64: "\\"xxxx/,
  ],
  [
    "empty system",
    workerReady({ systems: ["x86_64-linux", ""] }),
    /field "systems" has an empty system/,
  ],
  ["float", "(no-build 1.5)", /unsupported number "1.5"/],
  ["too deep", "(no-build " + "(".repeat(20) + ")".repeat(21), /maxDepth/],
];

Deno.test("decodeMessage() rejects malformed payloads with ProtocolError", async (t) => {
  for (const [name, payload, message] of MALFORMED) {
    await t.step(name, () => {
      const bytes = typeof payload === "string"
        ? encoder.encode(payload)
        : payload;
      assert.throws(() => decodeMessage(bytes), (error) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal(error.name, "ProtocolError");
        assert.match(error.message, message);
        return true;
      });
    });
  }
});

Deno.test("decodeMessage() takes worker names, hosts and systems up to their bounds", () => {
  const worker = {
    name: "N".repeat(MAX_WORKER_NAME_LENGTH),
    address: "a".repeat(MAX_HOST_LENGTH),
    machine: "m".repeat(MAX_HOST_LENGTH),
    systems: Array.from(
      { length: MAX_WORKER_SYSTEMS },
      (_, i) => `${i}`.padEnd(MAX_SYSTEM_LENGTH, "x"),
    ),
    lastSeen: 0,
  };
  for (const type of ["worker-ready", "worker-ping"] as const) {
    assert.deepEqual(
      decodeMessage(encodeMessage({ type, worker })),
      { type, worker },
    );
  }
  assert.deepEqual(
    decodeMessage(
      encodeMessage({ type: "worker-request-work", name: worker.name }),
    ),
    { type: "worker-request-work", name: worker.name },
  );
});

Deno.test("decodeMessage() names the offending field of a worker it refuses", () => {
  assert.throws(
    () => decodeMessage(encoder.encode(workerReady({ name: "" }))),
    (error) => {
      assert.ok(error instanceof ProtocolError);
      assert.equal(error.tag, "worker-ready");
      assert.equal(error.field, "name");
      return true;
    },
  );
});

Deno.test("decodeMessage() keeps the syntax error as cause", () => {
  assert.throws(() => decodeMessage(encoder.encode("(a")), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.ok(error.cause instanceof SexpSyntaxError);
    return true;
  });
});

Deno.test("decodeMessage() rejects a payload over maxBytes", () => {
  const big = encoder.encode(`(worker-request-work "${"x".repeat(2000)}")`);
  assert.throws(
    () => decodeMessage(big, { maxBytes: 1000 }),
    /exceeds maxBytes 1000/,
  );
  assert.throws(
    () => decodeMessage(new Uint8Array(2 * 1024 * 1024).fill(0x28)),
    ProtocolError,
  );
});

Deno.test("the default payload limit holds a worker-ready at every field's bound, eight held builds and a proof", () => {
  const widest: Message = {
    type: "worker-ready",
    worker: {
      name: "n".repeat(MAX_WORKER_NAME_LENGTH),
      address: "a".repeat(MAX_HOST_LENGTH),
      machine: "m".repeat(MAX_HOST_LENGTH),
      systems: Array.from(
        { length: MAX_WORKER_SYSTEMS },
        (_, i) => `${i}`.padEnd(MAX_SYSTEM_LENGTH, "s"),
      ),
      lastSeen: 0,
    },
    // A store file name is at most 211 bytes.
    holding: Array.from(
      { length: 8 },
      (_, i) => `/gnu/store/${`${i}`.padEnd(211, "d")}`,
    ),
    auth: { key: "k".repeat(64), mac: "f".repeat(64) },
  };
  const payload = encodeMessage(widest);
  assert.ok(
    payload.length * 4 < DEFAULT_MAX_PAYLOAD_BYTES,
    `${payload.length} bytes: too close to the limit`,
  );
  assert.deepEqual(decodeMessage(payload), widest);
  const over = new Uint8Array(DEFAULT_MAX_PAYLOAD_BYTES + 1).fill(0x20);
  over.set(encoder.encode("(no-build)"));
  assert.throws(
    () => decodeMessage(over),
    new RegExp(`exceeds maxBytes ${DEFAULT_MAX_PAYLOAD_BYTES}`),
  );
});

Deno.test("decodeMessage() throws only ProtocolError on random bytes", () => {
  let seed = 1;
  const next = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const alphabet = encoder.encode('()"#\\ ftx1-a;{}\xff');
  const wire = WIRE.map(([text]) => encoder.encode(text));
  for (let i = 0; i < 3000; i++) {
    // Mutate a real message, or make noise from scratch.
    const base = i % 2 === 0
      ? wire[next(wire.length)].slice()
      : new Uint8Array(next(30));
    for (let j = 0; j < 1 + next(4); j++) {
      if (base.length === 0) break;
      base[next(base.length)] = alphabet[next(alphabet.length)];
    }
    try {
      decodeMessage(base);
    } catch (error) {
      assert.ok(error instanceof ProtocolError, `${error} for ${base}`);
    }
  }
});

// Lorica extensions: exact wire shapes, sent only to peers that announced them.
const LORICA_WIRE: [string, Message][] = [
  [
    '(lorica-hello (version 1) (features ("request-id" "build-cancel" "holding")))',
    {
      type: "lorica-hello",
      version: 1,
      features: ["request-id", "build-cancel", "holding"],
    },
  ],
  [
    '(lorica-welcome (version 1) (features ("request-id" "auth")) (nonce "00ff"))',
    {
      type: "lorica-welcome",
      version: 1,
      features: ["request-id", "auth"],
      nonce: "00ff",
    },
  ],
  [
    '(lorica-welcome (version 1) (features ("store-dir")) (nonce "00ff") (store-dir "/srv/farm/store"))',
    {
      type: "lorica-welcome",
      version: 1,
      features: ["store-dir"],
      nonce: "00ff",
      storeDir: "/srv/farm/store",
    },
  ],
  [
    '(worker-request-work "q3ZfA9kL" (request-id 42))',
    { type: "worker-request-work", name: "q3ZfA9kL", requestId: 42 },
  ],
  ["(no-build (request-id 42))", { type: "no-build", requestId: 42 }],
  [
    `(build (drv "${DRV}") (priority 9) (timeout 72000) (max-silent 3600) (timestamp #f) (system "x86_64-linux") (request-id 42))`,
    {
      type: "build",
      drv: DRV,
      priority: 9,
      timeout: 72000,
      maxSilent: 3600,
      timestamp: null,
      system: "x86_64-linux",
      requestId: 42,
    },
  ],
  [
    `(worker-ready (worker (name "q3ZfA9kL") (address "10.0.0.7") (machine "builder1") (systems ("x86_64-linux" "i686-linux")) (last-seen 0)) (holding ("${DRV}")) (auth (key "farm") (mac "ab12")))`,
    {
      type: "worker-ready",
      worker: WORKER,
      holding: [DRV],
      auth: { key: "farm", mac: "ab12" },
    },
  ],
  [`(build-cancel (drv "${DRV}"))`, { type: "build-cancel", drv: DRV }],
  [
    `(result-ack (drv "${DRV}") (outcome "fetching"))`,
    { type: "result-ack", drv: DRV, outcome: "fetching" },
  ],
  [
    '(worker-refused (reason "bad proof for key \\"farm\\""))',
    { type: "worker-refused", reason: 'bad proof for key "farm"' },
  ],
  ["(worker-accepted)", { type: "worker-accepted" }],
  [
    `(outputs-fetched (drv "${DRV}"))`,
    { type: "outputs-fetched", drv: DRV },
  ],
];

Deno.test("decodeMessage() and encodeMessage() round-trip the Lorica extensions", async (t) => {
  for (const [wire, message] of LORICA_WIRE) {
    await t.step(wire.slice(0, 40), () => {
      assert.deepEqual(decodeMessage(encoder.encode(wire)), message);
      assert.equal(decoder.decode(encodeMessage(message)), wire);
    });
  }
});

Deno.test("encodeMessage() writes Cuirass's exact shapes when no extension is set", () => {
  // What a Cuirass peer must see: nothing appended.
  assert.equal(
    decoder.decode(encodeMessage({ type: "worker-request-work", name: "n" })),
    '(worker-request-work "n")',
  );
  assert.equal(
    decoder.decode(encodeMessage({ type: "worker-ready", worker: WORKER })),
    WIRE[3][0],
  );
});

Deno.test("decodeMessage() rejects malformed extension fields", () => {
  for (
    const bad of [
      '(no-build (request-id "x"))',
      "(no-build (request-id -1))",
      '(worker-ready (worker (name "n") (address "a") (machine "m") (systems ()) (last-seen 0)) (holding (1)))',
      '(worker-ready (worker (name "n") (address "a") (machine "m") (systems ()) (last-seen 0)) (auth (key 1) (mac "m")))',
      "(lorica-hello (version 1))",
      "(build-cancel)",
      `(result-ack (drv "${DRV}"))`,
      '(result-ack (outcome "recorded") (drv "/d"))',
      '(result-ack (drv 1) (outcome "recorded"))',
      '(result-ack (drv "/d") (outcome recorded))',
      '(result-ack (drv "/d") (outcome "recorded\nignored"))',
      "(worker-refused)",
      "(worker-refused (reason 1))",
      "(outputs-fetched)",
      '(outputs-fetched (outcome "fetched"))',
      '(outputs-fetched (drv "/d\x00"))',
    ]
  ) {
    assert.throws(() => decodeMessage(encoder.encode(bad)), ProtocolError, bad);
  }
});

Deno.test("decodeMessage() keeps a welcome whose store-dir it cannot read, the error quoting the value", async (t) => {
  const cases: [string, string][] = [
    ["1", 'field "store-dir" is not a string: "1"'],
    ['"gnu/store"', 'is not an absolute directory: "\\"gnu/store\\""'],
    ['"/gnu/store/"', 'is not an absolute directory: "\\"/gnu/store/\\""'],
    ['"/"', 'is not an absolute directory: "\\"/\\""'],
    ['""', 'is not an absolute directory: "\\"\\""'],
    ['"/gnu\\nstore"', 'has a control character: "\\"/gnu\\\\nstore\\""'],
    ['"/a" "/b"', 'field "store-dir" has more than one value'],
  ];
  for (const [value, why] of cases) {
    await t.step(value, () => {
      const wire =
        `(lorica-welcome (version 1) (features ("store-dir")) (nonce "n") (store-dir ${value}))`;
      const welcome = decodeMessage(encoder.encode(wire));
      assert.ok(
        welcome.type === "lorica-welcome" && welcome.storeDirError,
        JSON.stringify(welcome),
      );
      const { storeDirError, ...rest } = welcome;
      assert.deepEqual(rest, {
        type: "lorica-welcome",
        version: 1,
        features: ["store-dir"],
        nonce: "n",
      });
      assert.ok(
        storeDirError.startsWith(
          'Cannot decode message "lorica-welcome": field "store-dir" ',
        ) && storeDirError.includes(why),
        storeDirError,
      );
    });
  }
});

Deno.test("decodeMessage() takes a result-ack of any outcome, for a later server may say more", () => {
  const wire =
    `(result-ack (drv "${DRV}") (outcome "rebuilt-elsewhere") (at 5))`;
  assert.deepEqual(decodeMessage(encoder.encode(wire)), {
    type: "result-ack",
    drv: DRV,
    outcome: "rebuilt-elsewhere",
  });
});

Deno.test("decodeMessage() takes a worker-accepted with fields a later server appends", () => {
  assert.deepEqual(
    decodeMessage(encoder.encode('(worker-accepted (key "farm"))')),
    { type: "worker-accepted" },
  );
});

Deno.test("worker-ping carries a Lorica worker's disk state, and only when given", () => {
  const worker = {
    name: "w",
    address: "10.0.0.7",
    machine: "m",
    systems: ["x86_64-linux"],
    lastSeen: 0,
  };
  const low = encodeMessage({ type: "worker-ping", worker, diskLow: true });
  assert.match(new TextDecoder().decode(low), /\(disk-low #t\)\)$/);
  assert.deepEqual(decodeMessage(low), {
    type: "worker-ping",
    worker,
    diskLow: true,
  });
  const plain = encodeMessage({ type: "worker-ping", worker });
  assert.doesNotMatch(new TextDecoder().decode(plain), /disk-low/);
  assert.throws(
    () =>
      decodeMessage(
        new TextEncoder().encode(
          '(worker-ping (worker (name "w") (address "a") (machine "m") (systems ("s")) (last-seen 0)) (disk-low 3))',
        ),
      ),
    ProtocolError,
  );
});

Deno.test("decodeMessage() keeps what it read of a work reply it cannot decode: the build's derivation, the request id", async (t) => {
  const usual =
    '(priority 9) (timeout 1) (max-silent 2) (timestamp #f) (system "s")';
  const huge = "99999999999999999999";
  const cases: [string, string, { drv?: string; requestId?: number }][] = [
    [
      "timeout past the safe integers",
      `(build (drv "${DRV}") ${
        usual.replace("(timeout 1)", `(timeout ${huge})`)
      } (request-id 7))`,
      { drv: DRV, requestId: 7 },
    ],
    [
      "unknown field in a field's place",
      `(build (drv "${DRV}") (request-id 8) (colour "red") ${usual})`,
      { drv: DRV, requestId: 8 },
    ],
    [
      "request id past the safe integers",
      `(build (drv "${DRV}") ${usual} (request-id ${huge}))`,
      { drv: DRV },
    ],
    [
      "derivation not a string",
      `(build (drv 42) ${usual} (request-id 9))`,
      { requestId: 9 },
    ],
    [
      "derivation with a control character",
      `(build (drv "/d\u0000") ${usual})`,
      {},
    ],
    [
      "no-build with a bad request id",
      `(no-build (request-id -1))`,
      {},
    ],
  ];
  for (const [name, payload, kept] of cases) {
    await t.step(name, () => {
      assert.throws(() => decodeMessage(encoder.encode(payload)), (error) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.deepEqual(
          { drv: error.drv, requestId: error.requestId },
          { drv: kept.drv, requestId: kept.requestId },
        );
        return true;
      });
    });
  }
  await t.step("nothing kept of other messages", () => {
    assert.throws(
      () => decodeMessage(encoder.encode(`(build-cancel (drv "${DRV}") `)),
      (error) => error instanceof ProtocolError && error.drv === undefined,
    );
    assert.throws(
      () =>
        decodeMessage(
          encoder.encode(`(result-ack (drv "${DRV}") (outcome 1))`),
        ),
      (error) => error instanceof ProtocolError && error.drv === undefined,
    );
  });
});
