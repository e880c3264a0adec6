// The stylesheet of the web pages, embedded so that air-gapped farms need no CDN.

/** CSS for every page: system fonts, status colours, tables, cards. */
export const STYLESHEET = `
:root {
  --fg: #1f2328; --muted: #59636e; --bg: #f6f8fa; --card: #ffffff;
  --line: #d1d9e0; --accent: #0b5cad;
  --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #cf222e; --bad-bg: #ffebe9;
  --wait: #8250df; --wait-bg: #fbefff; --run: #9a6700; --run-bg: #fff8c5;
  --off: #59636e; --off-bg: #eff2f5;
}
* { box-sizing: border-box; }
body {
  margin: 0; color: var(--fg); background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
nav {
  display: flex; gap: 1.5rem; align-items: center; padding: .7rem 1.5rem;
  background: #24292f; color: #fff;
}
nav .brand { font-weight: 700; letter-spacing: .04em; color: #fff; }
nav a { color: #d0d7de; }
nav a.active, nav a:hover { color: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; word-break: break-all; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .6rem; }
table {
  width: 100%; border-collapse: collapse; background: var(--card);
  border: 1px solid var(--line); border-radius: 6px; overflow: hidden;
}
th, td {
  text-align: left; padding: .45rem .7rem; border-bottom: 1px solid var(--line);
  vertical-align: top;
}
th { background: var(--bg); font-weight: 600; font-size: .85rem; color: var(--muted); }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.facts {
  display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1.2rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 1rem; margin: 0;
}
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-all; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85rem; }
pre.log {
  background: #0d1117; color: #e6edf3; padding: 1rem; border-radius: 6px;
  overflow-x: auto; white-space: pre-wrap; word-break: break-all; max-height: 70vh;
}
.badge {
  display: inline-block; padding: .05rem .55rem; border-radius: 1rem;
  font-size: .8rem; font-weight: 600; white-space: nowrap;
}
.s-succeeded { color: var(--ok); background: var(--ok-bg); }
.s-failed, .s-failed-dependency, .s-failed-other, .s-unresponsive {
  color: var(--bad); background: var(--bad-bg);
}
.s-scheduled, .s-submitted { color: var(--wait); background: var(--wait-bg); }
.s-started, .s-busy { color: var(--run); background: var(--run-bg); }
.s-canceled, .s-idle, .s-aborted { color: var(--off); background: var(--off-bg); }
.bar {
  display: flex; height: .6rem; min-width: 8rem; border-radius: .3rem;
  overflow: hidden; background: var(--off-bg);
}
.bar .ok { background: var(--ok); }
.bar .bad { background: var(--bad); }
.bar .wait { background: var(--wait); opacity: .5; }
.muted { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr)); gap: 1rem; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 1rem;
}
.card h2 { margin: 0 0 .5rem; font-size: 1.05rem; display: flex; gap: .6rem; align-items: center; }
.card dl.facts { border: none; padding: 0; }
.empty { padding: 2rem; text-align: center; color: var(--muted); background: var(--card); border: 1px dashed var(--line); border-radius: 6px; }
input, select, button { font: inherit; }
input[type=password], input[type=text], input[type=number], input:not([type]), select {
  padding: .3rem .5rem; border: 1px solid var(--line); border-radius: 4px; background: #fff; color: var(--fg);
}
button, a.button {
  display: inline-block; padding: .3rem .85rem; border: 1px solid var(--line); border-radius: 6px;
  background: #f6f8fa; color: var(--fg); cursor: pointer; font-weight: 500; font-size: .9rem;
}
button:hover, a.button:hover { background: #eaeef2; text-decoration: none; }
button.danger { color: var(--bad); border-color: #f1aeb5; }
button.danger:hover { background: var(--bad-bg); }
a.button.primary, .spec-form button { background: var(--accent); border-color: var(--accent); color: #fff; }
nav form.search { margin-left: auto; }
nav input[type=search] {
  width: 24rem; max-width: 40vw; padding: .3rem .6rem; border-radius: 6px;
  border: 1px solid #57606a; background: #32383f; color: #fff;
}
nav input[type=search]::placeholder { color: #afb8c1; }
.title-row { display: flex; align-items: center; gap: 1rem; flex-wrap: wrap; margin: 0 0 1rem; }
.title-row h1 { margin: 0; }
.title-row > :last-child:not(h1) { margin-left: auto; }
form.admin {
  display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; margin: 0 0 1rem;
  padding: .5rem .8rem; background: var(--card); border: 1px solid var(--line);
  border-left: 3px solid var(--wait); border-radius: 6px; font-size: .9rem;
}
form.admin label { color: var(--muted); display: flex; gap: .4rem; align-items: center; margin-right: .4rem; }
form.admin input[type=password] { width: 12rem; }
.chips .chip {
  display: inline-flex; gap: .35rem; align-items: baseline; padding: .05rem .65rem; margin: 0 .2rem;
  background: var(--card); border: 1px solid var(--line); border-radius: 1rem;
}
table.compact { width: auto; min-width: 26rem; margin-bottom: 1rem; }
td code, .nowrap, td.nowrap { white-space: nowrap; }
.small { font-size: .82rem; }
.rate { display: flex; align-items: center; gap: .6rem; }
.rate .bar { flex: 1; }
.rate-text { min-width: 3.2rem; color: var(--muted); font-variant-numeric: tabular-nums; }
.card.stale { border-color: #f1aeb5; background: #fffafa; }
.card .worker-name { word-break: break-all; }
.notice { padding: .6rem .9rem; background: var(--run-bg); border: 1px solid #eed888; border-radius: 6px; }
.summary { margin: 0 0 .8rem; }
.s-text-bad { color: var(--bad); font-weight: 600; }
.reason { max-width: 26rem; }
.reason.r-no-worker { color: var(--bad); }
.reason.r-next { color: var(--ok); }
pre.log.live { border-left: 3px solid var(--run); }
.spec-form {
  display: grid; gap: .9rem; max-width: 46rem; background: var(--card);
  border: 1px solid var(--line); border-radius: 6px; padding: 1.2rem;
}
.spec-form label { display: grid; gap: .25rem; font-weight: 500; }
.spec-form fieldset {
  border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem;
  display: flex; flex-wrap: wrap; gap: .4rem 1.2rem;
}
.spec-form legend { font-weight: 600; padding: 0 .3rem; }
.channel-row { display: grid; grid-template-columns: 8rem 1fr 7rem; gap: .4rem; width: 100%; }
.spec-form label.check { display: flex; align-items: center; gap: .35rem; font-weight: normal; }
.spec-form button { justify-self: start; padding: .4rem 1.2rem; }
.grid-summary { margin: 0 0 .6rem; }
.job-grid { display: flex; flex-wrap: wrap; gap: 3px; list-style: none; padding: 0; margin: .8rem 0; }
.job-grid a {
  display: block; width: .85rem; height: .85rem; border-radius: 2px;
  background: var(--off);
}
.job-grid a.s-succeeded { background: var(--ok); }
.job-grid a.s-failed, .job-grid a.s-failed-dependency, .job-grid a.s-failed-other { background: var(--bad); }
.job-grid a.s-scheduled, .job-grid a.s-submitted { background: var(--wait); opacity: .55; }
.job-grid a.s-started { background: var(--run); }
.job-grid a:hover, .job-grid a:focus { outline: 2px solid var(--fg); text-decoration: none; }
.job-grid.labelled { gap: .3rem; }
.job-grid.labelled a {
  width: auto; height: auto; padding: .1rem .5rem; font-size: .82rem;
  border: 1px solid var(--line); border-radius: 4px; opacity: 1;
}
.job-grid.labelled a.s-succeeded { background: var(--ok-bg); }
.job-grid.labelled a.s-failed, .job-grid.labelled a.s-failed-dependency,
.job-grid.labelled a.s-failed-other { background: var(--bad-bg); }
.job-grid.labelled a.s-scheduled, .job-grid.labelled a.s-submitted { background: var(--wait-bg); }
.job-grid.labelled a.s-started { background: var(--run-bg); }
.job-grid.labelled a.s-canceled { background: var(--off-bg); }
.job-list { margin: .6rem 0; }
.job-list summary { cursor: pointer; font-weight: 600; }
time { white-space: nowrap; }
@media (max-width: 760px) {
  main { padding: 1rem .6rem; }
  nav { flex-wrap: wrap; gap: .4rem 1rem; padding: .6rem .8rem; }
  nav form.search { width: 100%; margin: 0; }
  nav input[type=search] { width: 100%; max-width: none; }
  table { display: block; overflow-x: auto; }
  /* Its minimum would widen the page past a phone's screen. */
  table.compact { min-width: 0; }
  .channel-row { grid-template-columns: 1fr; }
}
`;
