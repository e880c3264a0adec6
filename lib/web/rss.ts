// The RSS 2.0 feed of builds that changed result (weather new-success or new-failure).

import { escapeXml } from "./html.ts";
import type { Build } from "../store/types.ts";

/** Builds listed in the feed at most. */
export const RSS_ITEMS = 100;

/** Renders the feed; `baseUrl` has no trailing slash. */
export function renderRss(
  builds: Build[],
  options: { baseUrl: string; specification?: string },
): string {
  const { baseUrl, specification } = options;
  const self = `${baseUrl}/events/rss/${
    specification === undefined
      ? ""
      : `?specification=${encodeURIComponent(specification)}`
  }`;
  const items = builds.map((build) => {
    const url = `${baseUrl}/build/${build.id}/details`;
    const state = build.weather === 0 ? "fixed" : "broken";
    const title =
      `Build ${build.jobName} on ${build.specification} is ${state}.`;
    const description = `<p>The build <b>${escapeXml(build.jobName)}</b> ` +
      `for specification <b>${escapeXml(build.specification)}</b> is ` +
      `${state}.</p><p><a href="${escapeXml(url)}">Build ${build.id}</a></p>`;
    return `    <item>
      <guid>${escapeXml(url)}</guid>
      <title>${escapeXml(title)}</title>
      <author>lorica@localhost (Lorica)</author>
      <pubDate>${rfc822(build.stoptime)}</pubDate>
      <link>${escapeXml(url)}</link>
      <description>${escapeXml(description)}</description>
    </item>`;
  });
  return `<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
  <channel>
    <title>Lorica build events</title>
    <description>Builds that were fixed or broken${
    specification === undefined ? "" : ` in ${escapeXml(specification)}`
  }.</description>
    <link>${escapeXml(baseUrl)}/</link>
    <atom:link href="${escapeXml(self)}" rel="self" type="application/rss+xml"/>
${items.join("\n")}
  </channel>
</rss>
`;
}

/** Epoch seconds as an RFC 822 date, e.g. `Tue, 14 Nov 2023 22:13:20 GMT`. */
export function rfc822(epochSeconds: number): string {
  const date = new Date(epochSeconds * 1000);
  return Number.isNaN(date.getTime())
    ? new Date(0).toUTCString()
    : date.toUTCString();
}
