// GET /download/ID: a build product's file (cuirass.md 8.2), streamed.
// Only a recorded product of a build can be served, and only from the
// store: the path, links resolved, is checked again here, not trusted from
// the database.

import { HttpError } from "./http_error.ts";
import { parseId } from "./params.ts";
import type { Route, RouteContext } from "./route_context.ts";

export const DOWNLOAD_ROUTES: Route[] = [
  { pattern: "/download/:id", kind: "json", handle: download },
];

async function download(context: RouteContext): Promise<Response> {
  const { store, storeDir } = context.options;
  const id = parseId(context.params.id, "build product ID");
  const product = await store.getBuildProduct(id);
  if (product === null) {
    throw new HttpError(404, `Build product with ID ${id} doesn't exist.`);
  }
  const path = product.path;
  if (
    !path.startsWith(`${storeDir}/`) || path.split("/").includes("..")
  ) {
    throw new HttpError(
      404,
      `Build product with ID ${id} is not in the store.`,
    );
  }
  let file: Deno.FsFile;
  try {
    // A symbolic link in a store item may point anywhere (the state
    // directory, its admin token): what is opened must be in the store.
    const real = await Deno.realPath(path);
    if (!real.startsWith(`${await Deno.realPath(storeDir)}/`)) {
      throw new Error("a link out of the store");
    }
    // Checked before opening: opening a FIFO would wait for a writer.
    if (!(await Deno.stat(real)).isFile) throw new Error("not a file");
    file = await Deno.open(real, { read: true });
  } catch {
    throw new HttpError(
      404,
      `Build product with ID ${id} is no longer available.`,
    );
  }
  const name = path.slice(path.lastIndexOf("/") + 1);
  return new Response(file.readable, {
    headers: {
      "content-type": "application/octet-stream",
      "cache-control": "max-age=43200",
      "content-disposition": `attachment; filename="${
        name.replace(/[^A-Za-z0-9._+-]/g, "_")
      }"`,
    },
  });
}
