import assert from "node:assert/strict";
import {
  escapeHtml,
  html,
  pathSegment,
  SafeHtml,
} from "../../../lib/web/html.ts";

Deno.test("html escapes every interpolated string", () => {
  const value = `<script>alert("x") & 'y'</script>`;
  assert.equal(
    html`<p title="${value}">${value}</p>`.value,
    `<p title="&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;">&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;</p>`,
  );
});

Deno.test("html keeps nested markup and flattens arrays", () => {
  const items = ["<a>", "b"].map((item) => html`<li>${item}</li>`);
  assert.equal(
    html`<ul>${items}</ul>`.value,
    "<ul><li>&lt;a&gt;</li><li>b</li></ul>",
  );
  assert.ok(html`x` instanceof SafeHtml);
});

Deno.test("html renders numbers, and nothing for null, undefined and false", () => {
  assert.equal(
    html`${0}|${null}|${undefined}|${false}|${true}|${-1.5}`.value,
    "0||||true|-1.5",
  );
});

Deno.test("escapeHtml() and pathSegment() leave no markup or path separator", () => {
  assert.equal(escapeHtml("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
  assert.equal(pathSegment("../a b/<x>"), "..%2Fa%20b%2F%3Cx%3E");
});
