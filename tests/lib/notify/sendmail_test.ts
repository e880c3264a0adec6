import assert from "node:assert/strict";
import {
  SendmailError,
  sendWithSendmail,
} from "../../../lib/notify/sendmail.ts";

/** A stand-in sendmail: records its arguments and input, exits with $CODE. */
async function fakeSendmail(dir: string, code: number): Promise<string> {
  const path = `${dir}/sendmail-${code}`;
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nprintf '%s\\n' "$@" > "${dir}/args"\ncat > "${dir}/stdin"\necho "trouble" >&2\nexit ${code}\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

Deno.test("sendWithSendmail() passes the envelope and the message", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = await fakeSendmail(dir, 0);
    await sendWithSendmail(
      path,
      { from: "ci@farm.test", to: ["a@x.test", "b@y.test"] },
      "Subject: hi\r\n\r\nbody\r\n.\r\n",
    );
    assert.equal(
      await Deno.readTextFile(`${dir}/args`),
      "-i\n-f\nci@farm.test\n--\na@x.test\nb@y.test\n",
    );
    assert.equal(
      await Deno.readTextFile(`${dir}/stdin`),
      "Subject: hi\n\nbody\n.\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sendWithSendmail() reports failures, EX_TEMPFAIL as transient", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const table: [number, boolean][] = [[75, true], [1, false]];
    for (const [code, transient] of table) {
      await assert.rejects(
        sendWithSendmail(
          await fakeSendmail(dir, code),
          { from: "a@b.test", to: ["c@d.test"] },
          "x\r\n",
        ),
        (error) =>
          error instanceof SendmailError && error.exitCode === code &&
          error.transient === transient && /trouble/.test(error.message),
      );
    }
    await assert.rejects(
      sendWithSendmail(
        `${dir}/missing`,
        { from: "a@b.test", to: ["c@d.test"] },
        "",
      ),
      (error) => error instanceof SendmailError && !error.transient,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sendWithSendmail() gives up on time when a child of sendmail holds its stderr", async () => {
  const dir = await Deno.makeTempDir();
  const pidFile = `${dir}/grandchild.pid`;
  try {
    // Like a sendmail that forks a relay and waits on it: the forked child
    // inherits standard error and outlives the SIGKILL of its parent.
    const path = `${dir}/sendmail-forks`;
    await Deno.writeTextFile(
      path,
      `#!/bin/sh\nsleep 60 &\necho $! > "${pidFile}"\nwait\n`,
    );
    await Deno.chmod(path, 0o755);
    const started = Date.now();
    await assert.rejects(
      sendWithSendmail(path, { from: "a@b.test", to: ["c@d.test"] }, "x\r\n", {
        timeoutMs: 300,
      }),
      (error) =>
        error instanceof SendmailError && error.transient &&
        /timed out/.test(error.message),
    );
    assert.ok(Date.now() - started < 10_000, "waited on the forked child");
  } finally {
    const pid = Number(await Deno.readTextFile(pidFile).catch(() => "0"));
    if (pid > 0) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await Deno.remove(dir, { recursive: true });
  }
});
