import assert from "node:assert/strict";
import { notificationText } from "../../../lib/notify/notification_text.ts";
import { type Build, Weather } from "../../../lib/store/types.ts";
import { sampleBuild } from "./sample_build.ts";

Deno.test("notificationText() words subjects as Cuirass does", () => {
  const table: [Partial<Build>, string][] = [
    [{ weather: Weather.newFailure, status: 1 }, "broken"],
    [{ weather: Weather.newSuccess, status: 0 }, "fixed"],
    [{ weather: Weather.stillSucceeding, status: 0 }, "fixed"],
    [{ weather: Weather.stillFailing, status: 1 }, "broken"],
  ];
  for (const [fields, state] of table) {
    const text = notificationText(sampleBuild(fields), "https://ci.test/");
    assert.equal(text.subject, `Build hello.x86_64-linux on demo is ${state}.`);
    assert.equal(text.state, state);
    assert.equal(text.url, "https://ci.test/build/42/details");
    assert.ok(text.text.includes(text.url));
  }
});

Deno.test("notificationText() gives a relative URL without a base URL", () => {
  assert.equal(notificationText(sampleBuild(), "").url, "/build/42/details");
});

Deno.test("notificationText() keeps line breaks of job names out of the subject", () => {
  const text = notificationText(
    sampleBuild({ jobName: "evil\r\nBcc: x@y.test" }),
    "",
  );
  assert.equal(text.subject, "Build evil Bcc: x@y.test on demo is broken.");
});

Deno.test("notificationText() keeps job names from mentioning or tagging anyone on Mastodon", () => {
  const text = notificationText(
    sampleBuild({ jobName: "@admin@social.test #spam ＠x" }),
    "https://ci.test",
  );
  assert.ok(!/[@#＠＃](?!\u200b)/.test(text.status), text.status);
  assert.equal(text.status.replaceAll("\u200b", ""), text.text);
  // Mail readers do not mention: the mail keeps the name as it is.
  assert.match(text.text, /Job @admin@social\.test #spam ＠x of/);
});
