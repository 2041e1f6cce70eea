// Hookline UI: JSON highlighting, copy buttons and live refresh of /runs. No build step, no dependencies.
// Event data is untrusted: text is escaped before any markup is added, and rows are built with textContent.
"use strict";

(function () {
  // --- JSON highlighting: escape first, then wrap tokens in spans ---------------------------------
  const TOKEN = /("(?:\\u[a-fA-F0-9]{4}|\\[^u]|[^\\"])*"(?:\s*:)?|\b(?:true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;

  function escapeHtml(text) {
    return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function highlight(text) {
    return escapeHtml(text).replace(TOKEN, function (token) {
      let cls = "j-num";
      if (token[0] === '"') cls = /:$/.test(token) ? "j-key" : "j-str";
      else if (token === "true" || token === "false") cls = "j-bool";
      else if (token === "null") cls = "j-null";
      return '<span class="' + cls + '">' + token + "</span>";
    });
  }

  function highlightAll(root) {
    root.querySelectorAll("pre[data-json]:not([data-done])").forEach(function (pre) {
      pre.innerHTML = highlight(pre.textContent); // textContent is the unescaped text; highlight() escapes it
      pre.setAttribute("data-done", "");
    });
  }

  // --- copy buttons -------------------------------------------------------------------------------
  function copy(button) {
    const source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    const text = source.textContent.trim();
    const done = function () {
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1200);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
      return;
    }
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for Ctrl+C */ }
  }

  // --- live refresh of /runs ------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function shortTime(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : "–"; }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  function truncate(text, n) { return text.length > n ? text.slice(0, n - 3) + "..." : text; }

  function statusBadge(status) { return el("span", "status s-" + status, status); }

  // The same cells as templates/_runs.html.
  function buildRow(run, showFlow) {
    const tr = el("tr", "fresh");
    tr.setAttribute("data-id", run.id);
    tr.setAttribute("data-terminal", run.terminal ? "true" : "false");
    const idCell = el("td");
    const link = el("a", null, "#" + run.id);
    link.href = run.url;
    idCell.appendChild(link);
    if (run.replay_kind) {
      idCell.appendChild(document.createTextNode(" "));
      idCell.appendChild(el("span", "tag", run.replay_kind));
    }
    tr.appendChild(idCell);
    if (showFlow) tr.appendChild(el("td", null, run.flow_id));
    const st = el("td", "st");
    st.appendChild(statusBadge(run.status));
    tr.appendChild(st);
    const when = el("td");
    const time = el("time", null, shortTime(run.created_at));
    time.setAttribute("datetime", run.created_at || "");
    when.appendChild(time);
    tr.appendChild(when);
    tr.appendChild(el("td", "num", duration(run.duration_ms)));
    tr.appendChild(el("td", "key", run.dedupe_key || ""));
    const err = el("td", "err");
    if (run.why) err.appendChild(el("span", "why", truncate(run.why.summary, 160)));
    const res = run.resolution;
    if (res && res.by) {  // the same tag as _runs.html: resolved by, or followed by a replay or retry
      const link = el("a", res.state === "resolved" ? "tag ok resolved" : "tag retried",
        res.state === "resolved" ? "resolved by #" + res.by : (res.kind || "followed") + " #" + res.by + " " + res.by_status);
      link.href = res.url;
      err.appendChild(document.createTextNode(" "));
      err.appendChild(link);
    }
    tr.appendChild(err);
    return tr;
  }

  function updateRow(tr, run, showFlow) {
    if (tr.getAttribute("data-terminal") === "true" && run.terminal) return;
    const fresh = buildRow(run, showFlow);
    fresh.className = "";
    tr.replaceWith(fresh);
  }

  function live(table) {
    const tbody = table.tBodies[0];
    const showFlow = table.tHead.rows[0].cells.length === 7;
    const pollUrl = table.getAttribute("data-poll");
    let after = parseInt(table.getAttribute("data-after") || "0", 10);
    const indicator = document.getElementById("live");
    if (indicator) indicator.hidden = false;
    let busy = false;

    function url(params) {
      return pollUrl + (pollUrl.indexOf("?") >= 0 ? "&" : "?") + params;
    }

    function get(target) {
      return fetch(target, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
    }

    function tick() {
      if (busy || document.hidden) return;
      busy = true;
      const pending = Array.prototype.slice.call(tbody.querySelectorAll('tr[data-terminal="false"]'), 0, 100)
        .map(function (tr) { return tr.getAttribute("data-id"); });
      const jobs = [get(url("after=" + after + "&limit=100")).then(function (page) {
        if (page.runs.length) {
          const empty = table.parentNode.querySelector(".empty");
          if (empty) empty.remove();
          for (let i = page.runs.length - 1; i >= 0; i--) {
            tbody.insertBefore(buildRow(page.runs[i], showFlow), tbody.firstChild);
          }
          after = Math.max(after, page.max_id);
        }
        if (page.next_cursor) document.getElementById("newer").hidden = false;
      })];
      if (pending.length) {
        jobs.push(get("/api/runs?ids=" + pending.join(",")).then(function (data) {
          data.runs.forEach(function (run) {
            const tr = tbody.querySelector('tr[data-id="' + run.id + '"]');
            if (tr) updateRow(tr, run, showFlow);
          });
        }));
      }
      Promise.all(jobs).then(function () {
        if (indicator) indicator.classList.remove("stale");
      }, function () {
        if (indicator) indicator.classList.add("stale");
      }).then(function () {
        busy = false;
      });
    }
    setInterval(tick, 2500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    highlightAll(document);
    document.querySelectorAll("button[data-copy]").forEach(function (b) {
      b.addEventListener("click", function () { copy(b); });
    });
    const table = document.querySelector("table.runs[data-live]");
    if (table) live(table);
  });

  window.hookline = { highlight: highlight, escapeHtml: escapeHtml };
})();
