// The per-dialogue page (dialsum.report.dialogues): sort, filter and page through the embedded dialogues.
// Plain JavaScript, no library: only the dialogues of the current page are in the document.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("dialsum-data").textContent);
  const D = DATA.dialogues;
  const O = DATA.outputs;
  const PAGE_SIZE = 20;
  const chosen = O.map((o) => new Set(o.chosen));
  const state = { sort: "best", dir: "asc", a: 0, b: Math.min(1, O.length - 1), topic: "", text: "", page: 0 };
  let view = [];
  let haystacks = null;

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }
  const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(2));
  const label = (i) => (O[i].kind === "run" || O[i].label.toLowerCase().includes(O[i].kind)
    ? O[i].label : O[i].label + " (" + O[i].kind + ")");

  // The best run: the run (else any output) with the highest mean over the rows it is scored on.
  function bestOutput() {
    const pool = O.map((o, i) => i).filter((i) => O[i].kind === "run" && O[i].mean !== null);
    const from = pool.length ? pool : O.map((o, i) => i).filter((i) => O[i].mean !== null);
    return from.reduce((b, i) => (b === null || O[i].mean > O[b].mean ? i : b), null);
  }
  const BEST = bestOutput();

  function scoresOf(d) {
    return O.map((o) => o.score[d]).filter((s) => s !== null);
  }
  const SORTS = {
    best: { text: BEST === null ? "the best run's score" : "the best run's score (" + label(BEST) + ")",
            key: (d) => (BEST === null ? null : O[BEST].score[d]) },
    max: { text: "the highest score of any output", key: (d) => { const s = scoresOf(d); return s.length ? Math.max(...s) : null; } },
    spread: { text: "the spread between outputs (highest − lowest)",
              key: (d) => { const s = scoresOf(d); return s.length > 1 ? Math.max(...s) - Math.min(...s) : null; } },
    gap: { text: "the gap between two outputs (A − B)",
           key: (d) => { const a = O[state.a].score[d]; const b = O[state.b].score[d]; return a === null || b === null ? null : a - b; } },
    order: { text: "dev file order", key: (d) => d },
  };

  function matches(d) {
    if (state.topic && D[d].topic !== state.topic) return false;
    if (!state.text) return true;
    if (haystacks === null) {
      haystacks = D.map((x, i) => [x.fname, x.topic, ...x.turns.flat(), ...x.references,
        ...O.map((o) => o.summary[i] || "")].join("\n").toLowerCase());
    }
    return haystacks[d].includes(state.text.toLowerCase());
  }

  function applyView() {
    const key = SORTS[state.sort].key;
    const sign = state.dir === "desc" ? -1 : 1;
    const keyed = D.map((x, d) => d).filter(matches).map((d) => [d, key(d)]);
    keyed.sort((p, q) => {
      if (p[1] === null || q[1] === null) return (p[1] === null) - (q[1] === null) || p[0] - q[0];
      return sign * (p[1] - q[1]) || p[0] - q[0];
    });
    view = keyed.map((p) => p[0]);
  }

  function highlighted(text, spans) {
    const chars = Array.from(text); // spans count code points, as Python does
    const out = document.createDocumentFragment();
    let at = 0;
    for (let k = 0; k < spans.length; k += 2) {
      if (spans[k] > at) out.append(chars.slice(at, spans[k]).join(""));
      out.append(el("mark", null, chars.slice(spans[k], spans[k + 1]).join("")));
      at = spans[k + 1];
    }
    if (at < chars.length) out.append(chars.slice(at).join(""));
    return out;
  }

  function scoreCell(s) {
    const style = s === null ? null : "background:hsl(" + Math.round(Math.max(0, Math.min(100, s)) * 1.2) + ",70%,88%)";
    return el("td", { class: "score", style: style }, fmt(s));
  }

  function outputRow(o, i, d) {
    if (chosen[i].has(d)) {
      return el("tr", { class: "searched" }, el("th", null, O[i].label, el("span", { class: "kind" }, O[i].kind)),
        el("td", { class: "summary" }, el("span", { class: "searched-tag" }, "searched"),
          " its settings were chosen on this row's score: no summary or score of it is shown here"),
        el("td", { class: "score" }, "–"));
    }
    const summary = o.summary[d];
    const cell = summary === null
      ? el("td", { class: "summary" }, el("span", { class: "missing" }, "no summary of this dialogue"))
      : el("td", { class: "summary" }, highlighted(summary, o.spans[d]),
        o.source[d] ? el("span", { class: "source" }, "picked from " + o.source[d]) : null);
    return el("tr", null, el("th", null, o.label, el("span", { class: "kind" }, o.kind)), cell, scoreCell(o.score[d]));
  }

  function card(d) {
    const x = D[d];
    const stats = [];
    if (BEST !== null) stats.push("best run " + fmt(O[BEST].score[d]));
    const spread = SORTS.spread.key(d);
    if (spread !== null) stats.push("spread " + fmt(spread));
    if (state.sort === "gap") stats.push("A − B " + fmt(SORTS.gap.key(d)));
    const turns = x.turns.map(([who, text]) => {
      const n = (who.match(/\d+/) || [""])[0];
      return el("p", { class: "turn" }, who ? el("span", { class: "speaker s" + n }, who) : null, text);
    });
    const refs = el("div", { class: "refs" }, el("h4", null, x.references.length > 1 ? "References" : "Reference"),
      ...x.references.map((r) => el("p", null, r)));
    const outs = el("table", { class: "outs" }, el("tbody", null, ...O.map((o, i) => outputRow(o, i, d))));
    return el("article", { class: "dialogue", id: "dialogue-" + x.fname, "data-fname": x.fname, "data-topic": x.topic },
      el("h3", null, el("a", { href: "#" + encodeURIComponent(x.fname) }, x.fname),
        el("span", { class: "topic-tag" }, x.topic), el("span", { class: "stats" }, stats.join(" · "))),
      el("div", { class: "cols" }, el("div", { class: "turns" }, ...turns), el("div", null, refs, outs)));
  }

  function pager(node) {
    const pages = Math.max(1, Math.ceil(view.length / PAGE_SIZE));
    const go = (p) => { state.page = Math.max(0, Math.min(pages - 1, p)); render(true); };
    const button = (text, p, disabled, cls) => {
      const b = el("button", { type: "button", class: cls }, text);
      b.disabled = disabled;
      b.addEventListener("click", () => go(p));
      return b;
    };
    const input = el("input", { type: "number", min: 1, max: pages, class: "page-input", "aria-label": "page" });
    input.value = state.page + 1;
    input.addEventListener("change", () => go(Number(input.value) - 1));
    node.replaceChildren(button("« first", 0, state.page === 0, "first"),
      button("‹ previous", state.page - 1, state.page === 0, "prev"), "page ", input, " of " + pages,
      button("next ›", state.page + 1, state.page >= pages - 1, "next"),
      button("last »", pages - 1, state.page >= pages - 1, "last"));
  }

  function render(scroll) {
    const start = state.page * PAGE_SIZE;
    const shown = view.slice(start, start + PAGE_SIZE);
    $("list").replaceChildren(...shown.map(card));
    $("count").textContent = view.length
      ? "dialogues " + (start + 1) + "–" + (start + shown.length) + " of " + view.length +
        (view.length < D.length ? " matching (" + D.length + " in all)" : "")
      : "no dialogue matches (" + D.length + " in all)";
    pager($("pager-top"));
    pager($("pager-bottom"));
    $("gap-runs").hidden = state.sort !== "gap";
    for (const b of document.querySelectorAll("button.topic")) b.classList.toggle("active", b.dataset.topic === state.topic);
    if (scroll) $("controls").scrollIntoView();
  }

  function update() { state.page = 0; applyView(); render(false); }

  function options(select, items, value) {
    select.replaceChildren(...items.map(([v, text]) => el("option", { value: v }, text)));
    select.value = value;
  }

  function topicTable() {
    const head = el("tr", null, el("th", null, "Topic"), el("th", null, "Dialogues"), ...O.map((o, i) => el("th", null, label(i))));
    const row = (topic, count, cells) => {
      const means = cells.map((c) => c.mean).filter((m) => m !== null);
      const top = means.length ? Math.max(...means) : null;
      const button = el("button", { type: "button", class: "topic", "data-topic": topic }, topic || "All dialogues");
      button.addEventListener("click", () => { state.topic = topic; $("topic").value = topic; update(); });
      return el("tr", null, el("td", null, button), el("td", null, String(count)), ...cells.map((c) =>
        el("td", { class: c.mean !== null && c.mean === top ? "best" : null }, fmt(c.mean),
          c.n < count && c.mean !== null ? el("span", { class: "n" }, " (" + c.n + ")") : null)));
    };
    const all = row("", D.length, O.map((o) => ({ mean: o.mean, n: o.scored_rows })));
    $("topic-table").replaceChildren(el("thead", null, head),
      el("tbody", null, all, ...DATA.topics.map((t) => row(t.topic, t.dialogues, t.outputs))));
  }

  function showHash() {
    const fname = decodeURIComponent(location.hash.slice(1));
    const d = D.findIndex((x) => x.fname === fname);
    if (d < 0) return;
    if (!view.includes(d)) {
      state.topic = ""; state.text = ""; $("topic").value = ""; $("text").value = ""; applyView();
    }
    state.page = Math.floor(view.indexOf(d) / PAGE_SIZE);
    render(false);
    const node = $("dialogue-" + fname);
    node.classList.add("focused");
    node.scrollIntoView();
  }

  function setUp() {
    const best = BEST === null ? "" : "; best run " + label(BEST) + " (" + fmt(O[BEST].mean) + ")";
    $("summary").textContent = D.length + " dev dialogues, " + O.length + " outputs" + best + ".";
    $("notes").replaceChildren(...O.filter((o) => o.note).map((o) => el("li", null, o.label + " (" + o.kind + "): " + o.note)));
    options($("sort"), Object.entries(SORTS).map(([k, s]) => [k, s.text]), state.sort);
    const outs = O.map((o, i) => [String(i), label(i)]);
    options($("run-a"), outs, String(state.a));
    options($("run-b"), outs, String(state.b));
    options($("topic"), [["", "all topics"], ...DATA.topics.map((t) => [t.topic, t.topic + " (" + t.dialogues + ")"])], "");
    $("sort").addEventListener("change", (e) => { state.sort = e.target.value; update(); });
    $("direction").addEventListener("change", (e) => { state.dir = e.target.value; update(); });
    $("run-a").addEventListener("change", (e) => { state.a = Number(e.target.value); update(); });
    $("run-b").addEventListener("change", (e) => { state.b = Number(e.target.value); update(); });
    $("topic").addEventListener("change", (e) => { state.topic = e.target.value; update(); });
    let timer = null;
    $("text").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.text = e.target.value.trim(); update(); }, 150);
    });
    window.addEventListener("hashchange", showHash);
    topicTable();
    update();
    if (location.hash) showHash();
  }

  setUp();
})();
