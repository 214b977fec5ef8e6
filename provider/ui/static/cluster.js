// The GPU cluster page: fetch the cluster document every few seconds and render it.
//
// Authentication: the Airflow UI keeps its JWT in the `_token` cookie (set at sign-in, renewed
// by the api-server). This page is served by the same api-server, so a same-origin request
// carries that cookie and the API accepts it as it accepts a bearer token. Nothing is stored
// here. Every value from the server is written with textContent, never parsed as HTML.
"use strict";

(function () {
  const settings = JSON.parse(document.body.dataset.settings);
  const MIB_PER_GIB = 1024;

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function memory(mb) {
    return mb >= MIB_PER_GIB ? `${(mb / MIB_PER_GIB).toFixed(1)} GiB` : `${mb} MiB`;
  }

  function level(fraction) {
    if (fraction >= 0.85) return "hot";
    if (fraction >= 0.6) return "warn";
    return "";
  }

  // A labelled bar; in a table the column header names it, so `caption` may be omitted.
  function meter(label, fraction, text, caption = label) {
    const share = Math.max(0, Math.min(1, fraction || 0));
    const fill = el("div", { class: `fill ${level(share)}` });
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    const bar = el("div", { class: "bar", role: "meter" }, fill);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (share * 100).toFixed(0));
    bar.setAttribute("aria-label", label);
    return el("div", { class: "meter" },
      el("div", { class: "meter-label" }, el("span", { text: caption }), el("b", { text })),
      bar);
  }

  function ago(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  function taskLink(task) {
    return el("a", { href: task.url, class: "task", "data-airflow-link": "", text: `${task.dag_id} / ${task.task_id}` });
  }

  function taskDetails(task) {
    const parts = [task.run_id];
    if (task.map_index >= 0) parts.push(`map index ${task.map_index}`);
    if (task.try_number) parts.push(`try ${task.try_number}`);
    return el("div", { class: "muted small", text: parts.join(" · ") });
  }

  function holder(h) {
    const box = el("div", { class: "holder" });
    if (h.task) box.append(taskLink(h.task), taskDetails(h.task));
    else if (h.hidden) box.append(el("span", { text: "a task of a DAG you cannot read" }));
    else box.append(el("span", { text: "reserved outside Airflow (no task labels)" }));
    const notes = [];
    if (h.milli < 1000) notes.push(`${h.milli}m of the GPU`);
    if (notes.length) box.append(el("div", { class: "muted small", text: notes.join(" · ") }));
    if (h.stale) box.append(el("div", { class: "stale small", text: "stale: its task is gone; the next placement frees it" }));
    return box;
  }

  function gpuRow(gpu) {
    const util = gpu.utilization_pct / 100;
    const mem = gpu.memory_total_mb ? gpu.memory_used_mb / gpu.memory_total_mb : 0;
    const held = gpu.holders.length
      ? el("td", { class: "held" }, ...gpu.holders.map(holder))
      : el("td", { class: "held" }, el("span", { class: "free", text: "free" }));
    return el("tr", {},
      el("td", { class: "gpu" }, el("b", { text: `GPU ${gpu.index}` }), el("div", { class: "muted small", text: gpu.model || "unknown model" })),
      el("td", { class: "meter-cell" }, meter(`GPU ${gpu.index} utilisation`, util, `${gpu.utilization_pct.toFixed(0)} %`, "")),
      el("td", { class: "meter-cell" }, meter(`GPU ${gpu.index} memory`, mem,
        `${memory(gpu.memory_used_mb)} / ${memory(gpu.memory_total_mb)}`, "")),
      held);
  }

  function gpuTable(gpus) {
    if (!gpus.length) return el("p", { class: "muted", text: "No GPUs." });
    const head = el("tr", {}, ...["GPU", "Utilisation", "Memory", "Held by"].map((t) => el("th", { text: t })));
    return el("table", { class: "gpus" }, el("thead", {}, head), el("tbody", {}, ...gpus.map(gpuRow)));
  }

  function holdNote(h) {
    const who = h.task ? taskLink(h.task)
      : el("span", { text: h.hidden ? "a task of a DAG you cannot read" : "a task without task labels" });
    return el("div", { class: "hold" }, el("span", { text: "Held for " }), who,
      el("div", { class: "muted small", title: `lapses ${h.expires}`,
        text: `waiting since ${ago(h.since)}; tasks that came later are placed on other hosts until it starts` }));
  }

  function hostCard(host) {
    const head = el("div", { class: "host-head" },
      el("h3", { text: host.name }),
      el("span", { class: `badge ${host.reachable ? "ok" : "bad"}`, text: host.reachable ? "reachable" : "unreachable" }),
      ...host.pools.map((p) => el("span", { class: "tag", text: `pool ${p}` })),
      ...Object.entries(host.labels).map(([k, v]) => el("span", { class: "tag", text: `${k}=${v}` })));
    const card = el("article", { class: `host${host.reachable ? "" : " down"}`, "data-host": host.name }, head);
    if (host.problem) card.append(el("p", { class: "reason", text: host.problem }));
    card.append(...(host.holds || []).map(holdNote));
    if (host.cpu && host.memory) {
      const cores = `${host.cpu.count} core${host.cpu.count === 1 ? "" : "s"}`;
      card.append(el("div", { class: "meters" },
        meter(`CPU (${cores})`, host.cpu.utilization_pct / 100, `${host.cpu.utilization_pct.toFixed(0)} %`),
        meter("Memory", host.memory.total_mb ? host.memory.used_mb / host.memory.total_mb : 0,
          `${memory(host.memory.used_mb)} / ${memory(host.memory.total_mb)}`)));
      card.append(gpuTable(host.gpus));
    }
    return card;
  }

  function waitingTable(rows) {
    if (!rows.length) return el("div", { class: "empty", text: "No GPU task is waiting." });
    const head = el("tr", {}, ...["Task", "Run", "Map index", "State", "Operator", "Waiting since"].map((t) => el("th", { text: t })));
    const body = rows.map((r) => el("tr", {},
      el("td", {}, taskLink(r)),
      el("td", { class: "small", text: r.run_id }),
      el("td", { text: r.map_index >= 0 ? String(r.map_index) : "" }),
      el("td", { text: r.state.replaceAll("_", " ") }),
      el("td", { text: r.operator }),
      el("td", { text: ago(r.since), title: r.since || "" })));
    return el("div", { class: "waiting-table" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  // A pool's queues: quota and use per queue, then every waiting task in the order it starts.
  function amounts(a) {
    const parts = [];
    if (a.gpus) parts.push(`${+a.gpus.toFixed(3)} GPU${a.gpus === 1 ? "" : "s"}`);
    if (a.cpus) parts.push(`${+a.cpus.toFixed(3)} CPU${a.cpus === 1 ? "" : "s"}`);
    if (a.memory_mb) parts.push(memory(a.memory_mb));
    return parts.join(", ") || "0";
  }

  function queuesCard(pool) {
    const head = el("tr", {}, ...["Queue", "Quota", "In use", "Borrowed", "Lent", "Weight", "Waiting"]
      .map((t) => el("th", { text: t })));
    const rows = pool.queues.queues.map((q) => el("tr", {},
      el("td", { text: q.name }), el("td", { text: amounts(q.quota) }), el("td", { text: amounts(q.used) }),
      el("td", { text: amounts(q.borrowed) }), el("td", { text: amounts(q.lent) }),
      el("td", { text: String(q.weight) }), el("td", { text: String(q.waiting) })));
    const line = pool.queues.line.map((w) => el("li", {},
      w.task ? taskLink(w.task) : el("span", { class: "muted", text: "a task of a DAG you cannot read" }),
      el("span", { class: "muted small", text: ` · queue ${w.queue} · priority ${w.priority} · asks ${w.asks} · waiting since ${ago(w.since)}` })));
    return el("div", { class: "waiting-table" },
      el("h3", { text: `Pool ${pool.name}` }),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)),
      line.length ? el("ol", { class: "line" }, ...line) : el("div", { class: "empty", text: "No task waits in line." }));
  }

  function summary(doc) {
    const gpus = doc.hosts.flatMap((h) => h.gpus);
    const held = gpus.filter((g) => g.holders.length).length;
    const down = doc.hosts.filter((h) => !h.reachable).length;
    const parts = [
      `${doc.pools.length} pool${doc.pools.length === 1 ? "" : "s"}`,
      `${doc.hosts.length} host${doc.hosts.length === 1 ? "" : "s"}${down ? ` (${down} unreachable)` : ""}`,
      `${gpus.length} GPU${gpus.length === 1 ? "" : "s"}, ${held} held`,
      `${doc.waiting.length} waiting`,
    ];
    return parts.join(" · ");
  }

  function render(doc) {
    document.getElementById("summary").textContent = summary(doc);
    const problems = document.getElementById("problems");
    problems.hidden = !doc.problems.length;
    problems.replaceChildren(el("b", { text: "Configuration problems" }),
      el("ul", {}, ...doc.problems.map((p) => el("li", { text: p }))));
    document.getElementById("hosts").replaceChildren(...doc.hosts.map(hostCard));
    document.getElementById("waiting").replaceChildren(waitingTable(doc.waiting));
    const queued = doc.pools.filter((p) => p.queues);
    document.getElementById("queues-section").hidden = !queued.length;
    document.getElementById("queues").replaceChildren(...queued.map(queuesCard));
  }

  function setStatus(text, isError) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function signInPrompt() {
    const next = encodeURIComponent(window.location.href);
    const link = el("a", { href: `${settings.base}/api/v2/auth/login?next=${next}`, text: "Sign in to Airflow" });
    setStatus("", false);
    document.getElementById("summary").replaceChildren(link, " to see the cluster.");
  }

  async function refresh() {
    try {
      const response = await fetch(settings.api, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 401 || response.status === 403) {
        signInPrompt();
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      render(await response.json());
      setStatus(`Updated ${new Date().toLocaleTimeString()} · every ${settings.refreshSeconds} s`, false);
    } catch (err) {
      setStatus(`Could not refresh: ${err.message}; retrying`, true);
    } finally {
      window.setTimeout(refresh, settings.refreshSeconds * 1000);
    }
  }

  // Inside the Airflow UI this page is a sandboxed frame that may not navigate the window.
  // A task link then asks the UI's own router to open the task instance (same origin), and
  // keeps its plain href for a new tab or when the page is opened on its own.
  function openInAirflowUi(event) {
    const link = event.target.closest("a[data-airflow-link]");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    if (window.top === window) return;
    try {
      const top = window.top;
      const index = (top.history.state && top.history.state.idx) || 0;
      top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: index + 1 }, "", link.getAttribute("href"));
      top.dispatchEvent(new top.PopStateEvent("popstate", { state: top.history.state }));
      event.preventDefault();
    } catch (err) {
      // Framed by a page of another origin: follow the link inside the frame.
    }
  }

  document.addEventListener("click", openInAirflowUi);
  refresh();
})();
