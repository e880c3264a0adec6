// Derives the demo's fake-Guix scenario from the Guix package graph.
// deno-lint-ignore-file no-console -- a command-line tool that reports to its user
//
// Usage (from the repository root; not run by tests):
//
//   deno run --allow-read --allow-write demo/make_scenario.ts \
//     /path/to/guix-package-graph.jsonl
//
// The graph file is the JSON-lines package graph (one package a line, with
// `v` the node id, `n`/`ver` name and version, `inh` the inherited package,
// `br`/`rn`/`pr` the three kinds of inputs). It is only read here; the files
// written below are committed, so neither the demo nor the tests need it.
//
// Writes, next to this script:
// - scenario.json: packages for tests/fake-guix (format: ScenarioPackage
//   in tests/fake-guix/evaluate.ts): the closure of `coreutils` on x86_64-linux,
//   and a 7-package sub-closure of it that is also built on i686-linux;
// - demo-spec.scm: the Cuirass specification the demo server loads;
// - expected.json: the final status of every job, for checking a demo run.
//
// Build behaviour is made up but deterministic (a hash of the name): most
// builds take 0.5-3 s and print 10-60 lines; `attr` fails, so its dependents
// end as failed-dependency; `gmp` is the one slow build (20 s, 2,000 lines),
// placed where it does not lengthen the longest dependency chain much;
// `libunistring` succeeds with a log that is not UTF-8 (case C10).

/** One line of the package graph (only the fields used here). */
interface GraphNode {
  v: string;
  n: string | null;
  ver: string | null;
  inh: string | null;
  br: string[];
  rn: string[];
  pr: string[];
}

/** A package of the fake-Guix scenario file. */
interface ScenarioPackage {
  name: string;
  version: string;
  systems: string[];
  inputs: string[];
  outputs: string[];
  behaviour: {
    seconds: number;
    logLines: number;
    exit: number;
    outputBytes: number;
    silenceSeconds: number;
    logText: string | null;
  };
}

type Status = "succeeded" | "failed" | "failed-dependency";

const ROOT = "coreutils";
// Roots of the part also built on i686-linux: 7 packages in all.
const I686_ROOTS = ["libcap", "xz", "zlib", "m4"];
const SYSTEMS = ["x86_64-linux", "i686-linux"];
const FAILING = "attr";
const SLOW = "gmp";
/**
 * Succeeds with case C10's log: invalid UTF-8, ANSI colour, a lone CR
 * (the fake builder writes each character up to U+00FF as one byte).
 */
const UNREADABLE_LOG = "libunistring";
/** The job whose output file the demo offers as a build product. */
const PRODUCT_JOB = "libunistring";
const PRODUCT_VERSION = "1.3";
const C10_LOG_TEXT = "ok\n\u00fc\u00ff\u00c3(\n\u001b[31mred\u001b[0m\n\r";
// Extra outputs of a few packages, as their real definitions have.
const OUTPUTS: Record<string, string[]> = {
  libxml2: ["out", "static"],
  ncurses: ["out", "doc", "static"],
  xz: ["out", "static"],
};
const OUT_DIR = new URL(".", import.meta.url);

if (import.meta.main) {
  const [graphPath] = Deno.args;
  if (!graphPath) {
    console.error("usage: make_scenario.ts GUIX-PACKAGE-GRAPH.jsonl");
    Deno.exit(2);
  }
  await main(graphPath);
}

async function main(graphPath: string): Promise<void> {
  const graph = await readGraph(graphPath);
  const edges = acyclicEdges(graph, ROOT);
  const x86 = closure(edges, [ROOT]);
  const i686 = new Set(closure(edges, I686_ROOTS));
  const names = uniqueNames(graph, x86);

  const packages = x86.map((v): ScenarioPackage => ({
    name: names.get(v)!,
    version: versionOf(graph, v),
    systems: i686.has(v) ? SYSTEMS : [SYSTEMS[0]],
    inputs: edges.get(v)!.map((dep) => names.get(dep)!),
    outputs: OUTPUTS[v] ?? ["out"],
    behaviour: behaviourOf(v),
  }));
  const expected = expectedStatuses(packages);

  await write("scenario.json", JSON.stringify({ packages }, null, 2) + "\n");
  await write("expected.json", JSON.stringify(expected, null, 2) + "\n");
  await write("demo-spec.scm", specification());
  report(packages, expected);
}

async function readGraph(path: string): Promise<Map<string, GraphNode>> {
  const graph = new Map<string, GraphNode>();
  for (const line of (await Deno.readTextFile(path)).split("\n")) {
    if (line.trim() === "") continue;
    const node = JSON.parse(line) as GraphNode;
    graph.set(node.v, node);
  }
  return graph;
}

/**
 * Dependencies of every package reachable from `root`, minus the edges that
 * close a cycle (found by a depth-first walk in name order). In Guix such
 * cycles go through inline package variants, so dropping the back edge is
 * the faithful simplification.
 */
function acyclicEdges(
  graph: Map<string, GraphNode>,
  root: string,
): Map<string, string[]> {
  const edges = new Map<string, string[]>();
  const onPath = new Set<string>();
  function visit(v: string) {
    const node = graph.get(v);
    if (!node) throw new Error(`Cannot find package ${JSON.stringify(v)}`);
    const deps = [...new Set([...node.br, ...node.rn, ...node.pr])].sort();
    edges.set(v, []);
    onPath.add(v);
    for (const dep of deps) {
      if (onPath.has(dep)) continue; // back edge: breaks a cycle
      edges.get(v)!.push(dep);
      if (!edges.has(dep)) visit(dep);
    }
    onPath.delete(v);
  }
  visit(root);
  return edges;
}

/** The packages reachable from `roots`, dependencies first. */
function closure(edges: Map<string, string[]>, roots: string[]): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  function visit(v: string) {
    if (seen.has(v)) return;
    seen.add(v);
    for (const dep of edges.get(v)!) visit(dep);
    order.push(v);
  }
  for (const root of roots) visit(root);
  return order;
}

/** Package names (`n`, else that of the inherited package, else `v`). */
function uniqueNames(
  graph: Map<string, GraphNode>,
  vars: string[],
): Map<string, string> {
  const names = new Map<string, string>();
  const used = new Set<string>();
  for (const v of vars) {
    let name = inherited(graph, v, (node) => node.n) ?? v;
    if (used.has(name)) name = v;
    if (used.has(name)) throw new Error(`Cannot name ${v} uniquely`);
    used.add(name);
    names.set(v, name);
  }
  return names;
}

function versionOf(graph: Map<string, GraphNode>, v: string): string {
  return inherited(graph, v, (node) => node.ver) ?? "0";
}

/** A field of `v`, or of the package it inherits from when unset. */
function inherited(
  graph: Map<string, GraphNode>,
  v: string,
  field: (node: GraphNode) => string | null,
): string | null {
  for (let node = graph.get(v), hops = 0; node && hops < 10; hops++) {
    const value = field(node);
    if (value !== null) return value;
    node = node.inh === null ? undefined : graph.get(node.inh);
  }
  return null;
}

function behaviourOf(v: string): ScenarioPackage["behaviour"] {
  const hash = fnv1a(v);
  const behaviour = {
    seconds: 0.5 + (hash % 26) / 10, // 0.5 .. 3.0
    logLines: 10 + (hash >>> 8) % 51, // 10 .. 60
    exit: 0,
    outputBytes: 1024 * (1 + (hash >>> 16) % 200),
    silenceSeconds: 0,
    logText: null as string | null,
  };
  if (v === SLOW) {
    behaviour.seconds = 20;
    behaviour.logLines = 2000;
  }
  if (v === UNREADABLE_LOG) behaviour.logText = C10_LOG_TEXT;
  if (v === FAILING) {
    behaviour.exit = 1;
    behaviour.logText =
      "FAIL: test/attr.test (simulated failure for the Lorica demo)\n";
  }
  return behaviour;
}

/** 32-bit FNV-1a of the UTF-8 bytes of `text`. */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash;
}

/** Final status of each job: failure spreads to all transitive dependents. */
function expectedStatuses(
  packages: ScenarioPackage[],
): Record<string, Status> {
  const result: Record<string, Status> = {};
  for (const system of SYSTEMS) {
    const here = packages.filter((p) => p.systems.includes(system));
    const status = new Map<string, Status>();
    // `packages` lists dependencies first, so one pass suffices.
    for (const p of here) {
      const broken = p.inputs.some((dep) => status.get(dep) !== "succeeded");
      status.set(
        p.name,
        broken
          ? "failed-dependency"
          : p.behaviour.exit === 0
          ? "succeeded"
          : "failed",
      );
    }
    for (const p of [...here].sort((a, b) => a.name.localeCompare(b.name))) {
      result[`${p.name}.${system}`] = status.get(p.name)!;
    }
  }
  return result;
}

function specification(): string {
  return `;; Cuirass specification of the Lorica demo (written by make_scenario.ts).
;; The fake guix evaluates it against demo/scenario.json.
(list (specification
       (name "demo")
       (build 'all)
       (channels (list %default-guix-channel))
       (priority 2)
       (systems (list ${SYSTEMS.map((s) => JSON.stringify(s)).join(" ")}))
       ;; Offered for download at /download/ID once built.
       (build-outputs
        (list (build-output
               (job "^${PRODUCT_JOB}[.]")
               (type "data")
               (output "out")
               (path "share/${PRODUCT_JOB}-${PRODUCT_VERSION}/data"))))))
`;
}

async function write(name: string, text: string): Promise<void> {
  await Deno.writeTextFile(new URL(name, OUT_DIR), text);
}

/** Prints job counts and the longest chain of build time per system. */
function report(
  packages: ScenarioPackage[],
  expected: Record<string, Status>,
): void {
  for (const system of SYSTEMS) {
    const here = packages.filter((p) => p.systems.includes(system));
    const finish = new Map<string, number>();
    for (const p of here) {
      if (expected[`${p.name}.${system}`] === "failed-dependency") continue;
      const start = Math.max(0, ...p.inputs.map((d) => finish.get(d) ?? 0));
      finish.set(p.name, start + p.behaviour.seconds);
    }
    const longest = Math.max(...finish.values());
    console.log(
      `${system}: ${here.length} jobs, critical path ${longest.toFixed(1)} s`,
    );
  }
  console.log(
    `4 build slots, dependencies honoured: about ${
      makespan(packages, expected, 4).toFixed(1)
    } s of building`,
  );
  const counts: Record<string, number> = {};
  for (const status of Object.values(expected)) {
    counts[status] = (counts[status] ?? 0) + 1;
  }
  console.log(JSON.stringify(counts));
}

/** Simulated wall time of all builds on `slots` parallel build slots. */
function makespan(
  packages: ScenarioPackage[],
  expected: Record<string, Status>,
  slots: number,
): number {
  const jobs = SYSTEMS.flatMap((system) =>
    packages
      .filter((p) =>
        p.systems.includes(system) &&
        expected[`${p.name}.${system}`] !== "failed-dependency"
      )
      .map((p) => ({
        id: `${p.name}.${system}`,
        deps: p.inputs.map((d) => `${d}.${system}`),
        seconds: p.behaviour.seconds,
      }))
  );
  const finish = new Map<string, number>();
  const free = Array<number>(slots).fill(0);
  const pending = [...jobs];
  while (pending.length > 0) {
    // Start the job that can start earliest on the slot free earliest.
    free.sort((a, b) => a - b);
    let best = 0;
    let bestStart = Infinity;
    pending.forEach((job, i) => {
      if (!job.deps.every((d) => finish.has(d))) return;
      const ready = Math.max(0, ...job.deps.map((d) => finish.get(d)!));
      const start = Math.max(ready, free[0]);
      if (start < bestStart) [best, bestStart] = [i, start];
    });
    const [job] = pending.splice(best, 1);
    free[0] = bestStart + job.seconds;
    finish.set(job.id, free[0]);
  }
  return Math.max(...finish.values());
}
