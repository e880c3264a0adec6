import assert from "node:assert/strict";
import {
  type Account,
  lookupAccount,
  runSwitched,
  switchUserCommand,
} from "../../../lib/cli/run_as.ts";
import { UsageError } from "../../../lib/cli/args.ts";
import type { Child, Spawner } from "../../../lib/process.ts";

/** A spawner whose `getent` knows only `builder`; records every call. */
function getentKnowingBuilder(calls: string[][]): Spawner {
  return (argv) => {
    calls.push(argv);
    const known = argv[2] === "builder";
    const out = known
      ? "builder:x:997:30000:Guix build user:/var/empty:/sbin/nologin\n"
      : "";
    const stream = (text: string) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          if (text) controller.enqueue(new TextEncoder().encode(text));
          controller.close();
        },
      });
    return {
      pid: 1,
      stdout: stream(out),
      stderr: stream(""),
      stdin: null,
      status: Promise.resolve({ code: known ? 0 : 2, signal: null }),
      kill() {},
    } satisfies Child;
  };
}

const builder: Account = {
  name: "builder",
  uid: 997,
  gid: 30000,
  home: "/var/empty",
};

Deno.test("lookupAccount() reads getent's passwd line", async () => {
  const calls: string[][] = [];
  assert.deepEqual(
    await lookupAccount("builder", getentKnowingBuilder(calls)),
    builder,
  );
  assert.deepEqual(calls, [["getent", "passwd", "builder"]]);
});

Deno.test("lookupAccount() names an unknown user, and refuses a hostile name without running anything", async () => {
  const calls: string[][] = [];
  await assert.rejects(
    lookupAccount("nosuchuser", getentKnowingBuilder(calls)),
    (error: unknown) =>
      error instanceof UsageError &&
      error.message === 'Cannot use --user "nosuchuser": no such user',
  );
  for (const hostile of ["", "-rf", "a:b", "x\ny", "../root"]) {
    await assert.rejects(
      lookupAccount(hostile, getentKnowingBuilder(calls)),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message.includes(JSON.stringify(hostile)),
    );
  }
  assert.equal(calls.length, 1);
});

Deno.test("switchUserCommand(): nothing to do as that user; setpriv from root; an error otherwise", () => {
  const argv = ["/usr/bin/lorica-worker", "--user=builder", "-w", "2"];
  assert.equal(switchUserCommand(builder, 997, argv), null);
  assert.deepEqual(switchUserCommand(builder, 0, argv), [
    "setpriv",
    "--reuid=997",
    "--regid=30000",
    "--init-groups",
    "--",
    ...argv,
  ]);
  assert.throws(
    () => switchUserCommand(builder, 1000, argv),
    (error: unknown) =>
      error instanceof UsageError &&
      error.message.includes('"builder"') &&
      error.message.includes("uid 1000"),
  );
});

const canSwitch = Deno.uid() === 0 &&
  ["/usr/bin/setpriv", "/bin/setpriv"].some((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });

Deno.test({
  name:
    "runSwitched() runs the command as the user, with its HOME, and returns its exit status",
  ignore: !canSwitch,
  async fn() {
    const nobody = await lookupAccount("nobody");
    const dir = await Deno.makeTempDir({ prefix: "lorica-run-as-" });
    try {
      await Deno.chmod(dir, 0o777);
      const command = switchUserCommand(nobody, 0, [
        "/bin/sh",
        "-c",
        `id -u > ${dir}/uid; echo "$HOME $USER" > ${dir}/env; exit 7`,
      ])!;
      assert.equal(await runSwitched(command, nobody), 7);
      assert.equal((await Deno.readTextFile(`${dir}/uid`)).trim(), "65534");
      assert.equal(
        (await Deno.readTextFile(`${dir}/env`)).trim(),
        `${nobody.home} nobody`,
      );
      assert.equal((await Deno.stat(`${dir}/uid`)).uid, nobody.uid);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("lorica-server --user with an unknown user exits 2 and names it", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("../../../server.ts", import.meta.url).pathname,
      "--user=no-such-lorica-user",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 2);
  assert.match(
    new TextDecoder().decode(output.stderr),
    /"no-such-lorica-user": no such user/,
  );
});
