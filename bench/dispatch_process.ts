// The dispatch server (dispatch_server.ts) as a child process, driven by
// lines on its standard input, answered by JSON lines on its output.

const encoder = new TextEncoder();

/** A running dispatch_server.ts. */
export interface DispatchProcess {
  port: number;
  /** Sends `line` and returns the server's answer. */
  command(line: string): Promise<Record<string, unknown>>;
  /** Stops the server; its peak RSS in MB. */
  stop(): Promise<number>;
}

/** Starts dispatch_server.ts over the database `config` names. */
export async function startDispatchProcess(
  config: object,
): Promise<DispatchProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("./dispatch_server.ts", import.meta.url).pathname,
    ],
    env: { LORICA_BENCH_DISPATCH: JSON.stringify(config) },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  const writer = child.stdin.getWriter();
  let buffer = "";
  const readLine = async (): Promise<Record<string, unknown>> => {
    while (!buffer.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("dispatch server exited early");
      buffer += value;
    }
    const index = buffer.indexOf("\n");
    const line = buffer.slice(0, index);
    buffer = buffer.slice(index + 1);
    return JSON.parse(line);
  };
  const release = async () => {
    await writer.close().catch(() => {});
    await lines.cancel().catch(() => {});
    await child.status;
  };
  let port: number;
  try {
    port = Number((await readLine()).port);
  } catch (error) {
    await release();
    throw error;
  }
  return {
    port,
    async command(line) {
      await writer.write(encoder.encode(`${line}\n`));
      return await readLine();
    },
    async stop() {
      try {
        await writer.write(encoder.encode("stop\n"));
        return Number((await readLine()).peakRssMb);
      } finally {
        await release();
      }
    },
  };
}
