import assert from "node:assert/strict";
import {
  createFarmMetrics,
  MetricNameError,
  MetricsRegistry,
  renderFamily,
} from "../../../lib/web/metrics.ts";

Deno.test("MetricsRegistry renders counters, gauges and histograms in the text format", () => {
  const registry = new MetricsRegistry();
  const counter = registry.counter("x_total", "Things.\nMore");
  counter.inc();
  counter.inc(2, { system: 'a"b\\c\nd' });
  counter.inc(-5); // ignored: counters only go up
  const gauge = registry.gauge("y", "A level.");
  gauge.set(3);
  const histogram = registry.histogram("z_seconds", "Waits.", [1, 10]);
  histogram.observe(0.5);
  histogram.observe(5);
  histogram.observe(50);
  histogram.observe(NaN); // ignored
  assert.equal(
    registry.render(),
    [
      "# HELP x_total Things.\\nMore",
      "# TYPE x_total counter",
      "x_total 1",
      'x_total{system="a\\"b\\\\c\\nd"} 2',
      "# HELP y A level.",
      "# TYPE y gauge",
      "y 3",
      "# HELP z_seconds Waits.",
      "# TYPE z_seconds histogram",
      'z_seconds_bucket{le="1"} 1',
      'z_seconds_bucket{le="10"} 2',
      'z_seconds_bucket{le="+Inf"} 3',
      "z_seconds_sum 55.5",
      "z_seconds_count 3",
      "",
    ].join("\n"),
  );
});

Deno.test("MetricsRegistry refuses bad and duplicate names", () => {
  const registry = new MetricsRegistry();
  registry.counter("ok_total", "x");
  assert.throws(() => registry.counter("ok_total", "x"), MetricNameError);
  assert.throws(() => registry.gauge("1bad", "x"), MetricNameError);
  assert.throws(
    () => renderFamily("a", "x", "gauge", [[{ "b-c": "1" }, 1]]),
    MetricNameError,
  );
});

Deno.test("createFarmMetrics() holds what the server feeds", () => {
  const metrics = createFarmMetrics();
  metrics.dispatchLatency.observe(3, { system: "x86_64-linux" });
  metrics.logBytesReceived.inc(1234);
  metrics.buildsDispatched.inc(1, { system: "x86_64-linux" });
  const text = metrics.registry.render();
  assert.match(
    text,
    /lorica_dispatch_latency_seconds_bucket\{system="x86_64-linux",le="5"\} 1/,
  );
  assert.match(text, /^lorica_log_bytes_received_total 1234$/m);
  assert.match(
    text,
    /^lorica_builds_dispatched_total\{system="x86_64-linux"\} 1$/m,
  );
});
