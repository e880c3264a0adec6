// The pages' small embedded scripts: live build log and self-refreshing fragments.
// They read URLs from data attributes and insert text only with textContent,
// or markup the server rendered (and escaped) for the page itself.

/** Follows `/build/ID/log/events` into `#live-log`, keeping the view at the bottom. */
export const LIVE_LOG_SCRIPT = `
(function () {
  var pre = document.getElementById("live-log");
  var state = document.getElementById("live-state");
  var badge = document.getElementById("build-status");
  var raw = document.getElementById("raw-log");
  if (!pre || !window.EventSource) return;
  var shownStatus = badge ? badge.getAttribute("data-status") : null;
  // Times, worker and admin buttons change with the status: take them from
  // a fresh copy of this page, leaving the log being followed as it is.
  function refreshFacts() {
    if (!window.fetch || !window.DOMParser) return;
    fetch(location.pathname, {headers: {accept: "text/html"}, cache: "no-store"})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var facts = document.querySelector("dl.facts");
        var newFacts = fresh.querySelector("dl.facts");
        if (facts && newFacts) facts.replaceWith(document.adoptNode(newFacts));
        // The buttons only: a token being typed stays in its field.
        var form = document.querySelector("form.admin");
        var newForm = fresh.querySelector("form.admin");
        if (!form || !newForm) return;
        form.querySelectorAll("button").forEach(function (button) {
          button.remove();
        });
        newForm.querySelectorAll("button").forEach(function (button) {
          form.appendChild(document.adoptNode(button));
        });
      })
      .catch(function () {});
  }
  var names = {"-3": "submitted", "-2": "scheduled", "-1": "started",
    "0": "succeeded", "1": "failed", "2": "failed-dependency",
    "3": "failed-other", "4": "canceled"};
  var source = new EventSource(pre.getAttribute("data-events"));
  function atBottom() {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  }
  function append(text) {
    var follow = atBottom();
    pre.appendChild(document.createTextNode(text));
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
  function note(text) { if (state) state.textContent = text; }
  source.addEventListener("start", function () { pre.textContent = ""; });
  source.addEventListener("reset", function () {
    pre.textContent = "";
    note("The build started over; following the new log…");
  });
  source.addEventListener("truncated", function () {
    append("[… earlier lines left out; see the raw log …]\\n");
  });
  source.addEventListener("damaged", function () {
    note("The log file is damaged; the raw log may still help.");
  });
  source.addEventListener("log", function (event) {
    // Log text means the log file exists: its raw link works now.
    if (raw) raw.hidden = false;
    append(JSON.parse(event.data));
  });
  source.addEventListener("status", function (event) {
    var data = JSON.parse(event.data);
    var status = String(data.status);
    var name = names[status] || ("unknown(" + status + ")");
    if (status !== shownStatus) {
      shownStatus = status;
      refreshFacts();
    }
    // Facts refreshed meanwhile hold a new badge: find it again.
    badge = document.getElementById("build-status");
    if (badge) {
      badge.textContent = "";
      var span = document.createElement("span");
      span.className = "badge s-" + name;
      span.textContent = name;
      badge.appendChild(span);
    }
    if (status === "-1") note("Following the log as the build runs…");
    if (data.waiting) note("The log appears here once the build starts.");
  });
  source.addEventListener("end", function (event) {
    source.close();
    var status = JSON.parse(event.data).status;
    note("The build ended (" + (names[String(status)] || status) +
      "); this is its whole log.");
    pre.classList.remove("live");
  });
})();
`;

/**
 * Replaces `#live` with the HTML fragment at its `data-refresh` URL every
 * `data-interval` milliseconds while the tab is visible.
 */
export const REFRESH_SCRIPT = `
(function () {
  var box = document.getElementById("live");
  if (!box || !window.fetch) return;
  var url = box.getAttribute("data-refresh");
  var every = Number(box.getAttribute("data-interval")) || 2000;
  var stamp = document.getElementById("live-stamp");
  // Replacing the markup under a focused link or a selection would drop
  // them every few seconds: keyboard users could never follow a link, and
  // nobody could copy an address. Such updates wait for the next turn.
  function inUse() {
    if (box.contains(document.activeElement)) return true;
    var selection = window.getSelection && window.getSelection();
    return !!selection && !selection.isCollapsed &&
      box.contains(selection.anchorNode);
  }
  function tick() {
    if (document.hidden) return schedule();
    fetch(url, {headers: {accept: "text/html"}, cache: "no-store"})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        if (inUse()) return;
        box.innerHTML = text;
        if (stamp) stamp.textContent = "Updated " +
          new Date().toLocaleTimeString() + ".";
      })
      .catch(function () {
        if (stamp) stamp.textContent = "Cannot reach the server; retrying…";
      })
      .then(schedule);
  }
  function schedule() { setTimeout(tick, every); }
  schedule();
})();
`;
