// Test helper: a local HTTP endpoint standing in for a Mastodon instance.

export interface Seen {
  method: string;
  path: string;
  authorization: string | null;
  contentType: string | null;
  idempotencyKey: string | null;
  form: Record<string, string>;
}

/** A local stand-in for a Mastodon instance that records every request. */
export function startFakeMastodon(answers: number[] = []) {
  const seen: Seen[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (request) => {
      const url = new URL(request.url);
      seen.push({
        method: request.method,
        path: url.pathname,
        authorization: request.headers.get("authorization"),
        contentType: request.headers.get("content-type"),
        idempotencyKey: request.headers.get("idempotency-key"),
        form: Object.fromEntries(new URLSearchParams(await request.text())),
      });
      const status = answers.shift() ?? 200;
      if (status !== 200) return new Response('{"error":"no"}', { status });
      return Response.json({ id: String(100 + seen.length), content: "" });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}
