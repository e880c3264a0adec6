// Prometheus metrics: counters, gauges and histograms the server feeds, rendered as text.

/** Label names and values of one series, e.g. `{system: "x86_64-linux"}`. */
export type Labels = Record<string, string>;

/** A metric or label name that Prometheus would not accept. */
export class MetricNameError extends TypeError {
  constructor(readonly metricName: string) {
    super(
      `Cannot register metric: name ${
        JSON.stringify(metricName.slice(0, 100))
      } is not a Prometheus name`,
    );
    this.name = "MetricNameError";
  }
}

const METRIC_NAME_REGEXP = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_REGEXP = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Series one metric keeps at most, so label values cannot grow memory forever. */
const MAX_SERIES = 1000;

/** Anything the registry can render. */
interface Metric {
  readonly name: string;
  render(): string;
}

/** A value that only goes up, such as bytes received. */
export class Counter implements Metric {
  readonly #values = new Map<string, number>();

  constructor(readonly name: string, readonly help: string) {}

  /** Adds `value` (default 1) to the series with `labels`. */
  inc(value = 1, labels: Labels = {}): void {
    if (!(value >= 0) || !Number.isFinite(value)) return;
    addToSeries(this.#values, labels, value);
  }

  /** The current value of one series. */
  get(labels: Labels = {}): number {
    return this.#values.get(seriesKey(labels)) ?? 0;
  }

  render(): string {
    return renderSimple(this.name, this.help, "counter", this.#values);
  }
}

/** A value that goes up and down, such as connected workers. */
export class Gauge implements Metric {
  readonly #values = new Map<string, number>();

  constructor(readonly name: string, readonly help: string) {}

  /** Sets the series with `labels` to `value`. */
  set(value: number, labels: Labels = {}): void {
    if (!Number.isFinite(value)) return;
    const key = seriesKey(labels);
    if (!this.#values.has(key) && this.#values.size >= MAX_SERIES) return;
    this.#values.set(key, value);
  }

  /** Removes every series, before setting a fresh snapshot. */
  reset(): void {
    this.#values.clear();
  }

  /** The current value of one series. */
  get(labels: Labels = {}): number | undefined {
    return this.#values.get(seriesKey(labels));
  }

  render(): string {
    return renderSimple(this.name, this.help, "gauge", this.#values);
  }
}

/** Observations counted into buckets, such as dispatch latencies. */
export class Histogram implements Metric {
  readonly #series = new Map<
    string,
    { counts: number[]; sum: number; count: number }
  >();
  readonly buckets: number[];

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: number[],
  ) {
    this.buckets = [...buckets].filter(Number.isFinite).sort((a, b) => a - b);
  }

  /** Records one observation in the series with `labels`. */
  observe(value: number, labels: Labels = {}): void {
    if (!Number.isFinite(value)) return;
    const key = seriesKey(labels);
    let series = this.#series.get(key);
    if (series === undefined) {
      if (this.#series.size >= MAX_SERIES) return;
      series = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= this.buckets[i]) series.counts[i]++;
    }
    series.sum += value;
    series.count++;
  }

  /** Observations recorded in one series. */
  count(labels: Labels = {}): number {
    return this.#series.get(seriesKey(labels))?.count ?? 0;
  }

  render(): string {
    const lines = header(this.name, this.help, "histogram");
    for (const [key, series] of this.#series) {
      const labels = key === "" ? [] : [key];
      this.buckets.forEach((bound, i) => {
        lines.push(
          `${this.name}_bucket{${
            [...labels, `le="${formatNumber(bound)}"`].join(",")
          }} ${series.counts[i]}`,
        );
      });
      lines.push(
        `${this.name}_bucket{${
          [...labels, `le="+Inf"`].join(",")
        }} ${series.count}`,
      );
      const braces = key === "" ? "" : `{${key}}`;
      lines.push(`${this.name}_sum${braces} ${formatNumber(series.sum)}`);
      lines.push(`${this.name}_count${braces} ${series.count}`);
    }
    return lines.join("\n");
  }
}

/** A set of metrics rendered together in the Prometheus text format. */
export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();

  /**
   * Creates and registers a counter.
   * @throws {MetricNameError} for a bad or already registered name.
   */
  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
  }

  /**
   * Creates and registers a gauge.
   * @throws {MetricNameError} for a bad or already registered name.
   */
  gauge(name: string, help: string): Gauge {
    return this.#add(new Gauge(name, help));
  }

  /**
   * Creates and registers a histogram with upper bucket bounds.
   * @throws {MetricNameError} for a bad or already registered name.
   */
  histogram(name: string, help: string, buckets: number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  /** Every metric as Prometheus text exposition, ending with a newline. */
  render(): string {
    return [...this.#metrics.values()].map((metric) => metric.render())
      .join("\n") + "\n";
  }

  #add<T extends Metric>(metric: T): T {
    if (
      !METRIC_NAME_REGEXP.test(metric.name) || this.#metrics.has(metric.name)
    ) {
      throw new MetricNameError(metric.name);
    }
    this.#metrics.set(metric.name, metric);
    return metric;
  }
}

/** The metrics the server feeds; the web app adds store-derived ones at scrape time. */
export interface FarmMetrics {
  registry: MetricsRegistry;
  /** Seconds from a build's creation (or restart) to its hand-over to a worker. */
  dispatchLatency: Histogram;
  /** Compressed log bytes received from workers. */
  logBytesReceived: Counter;
  /** Builds handed to workers, by system. */
  buildsDispatched: Counter;
}

/** Dispatch latency buckets, in seconds: one second to one day. */
export const DISPATCH_LATENCY_BUCKETS = [
  1,
  5,
  15,
  60,
  300,
  900,
  3600,
  4 * 3600,
  24 * 3600,
];

/** Creates the registry and the metrics the server updates. */
export function createFarmMetrics(): FarmMetrics {
  const registry = new MetricsRegistry();
  return {
    registry,
    dispatchLatency: registry.histogram(
      "lorica_dispatch_latency_seconds",
      "Seconds from a build being scheduled to its hand-over to a worker.",
      DISPATCH_LATENCY_BUCKETS,
    ),
    logBytesReceived: registry.counter(
      "lorica_log_bytes_received_total",
      "Compressed build log bytes received from workers.",
    ),
    buildsDispatched: registry.counter(
      "lorica_builds_dispatched_total",
      "Builds handed to workers.",
    ),
  };
}

/** Escapes a label value for the text format. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(
    /"/g,
    '\\"',
  );
}

/**
 * Renders `{a="x",b="y"}` for one series.
 * @throws {MetricNameError} for a label name Prometheus would not accept.
 */
export function seriesKey(labels: Labels): string {
  return Object.keys(labels).sort().map((name) => {
    if (!LABEL_NAME_REGEXP.test(name)) throw new MetricNameError(name);
    return `${name}="${escapeLabelValue(labels[name])}"`;
  }).join(",");
}

/** One gauge-like family rendered from values computed at scrape time. */
export function renderFamily(
  name: string,
  help: string,
  type: "gauge" | "counter",
  series: [Labels, number][],
): string {
  const values = new Map<string, number>();
  for (const [labels, value] of series) values.set(seriesKey(labels), value);
  return renderSimple(name, help, type, values) + "\n";
}

function addToSeries(
  values: Map<string, number>,
  labels: Labels,
  value: number,
): void {
  const key = seriesKey(labels);
  const current = values.get(key);
  if (current === undefined && values.size >= MAX_SERIES) return;
  values.set(key, (current ?? 0) + value);
}

function header(name: string, help: string, type: string): string[] {
  return [
    `# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`,
    `# TYPE ${name} ${type}`,
  ];
}

function renderSimple(
  name: string,
  help: string,
  type: string,
  values: Map<string, number>,
): string {
  const lines = header(name, help, type);
  for (const [key, value] of values) {
    lines.push(`${name}${key === "" ? "" : `{${key}}`} ${formatNumber(value)}`);
  }
  return lines.join("\n");
}

function formatNumber(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}
