// stylecam panel: every control sends a command line to POST /api/command, the same text stdin takes.
"use strict";
const TOKEN = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
let state = null;

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = bad ? "bad" : "";
}

async function api(path, options = {}) {
  const headers = Object.assign({"X-Stylecam-Token": TOKEN}, options.headers || {});
  const r = await fetch(path, Object.assign({}, options, {headers}));
  const body = await r.json().catch(() => ({error: r.statusText}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function send(line) {
  try {
    const r = await api("/api/command", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({command: line})});
    say(r.queued ? `${line}: queued` : `${line}: applied`, false);
    if (r.state) render(r.state);
  } catch (e) {
    say(`${line}: ${e.message}`, true);
    if (state) render(state, true);
  }
}

function setIfIdle(el, value) {
  if (el === document.activeElement || value === undefined || value === null) return;
  if (el.type === "checkbox") el.checked = !!value; else el.value = value;
  const out = document.querySelector(`output[for="${el.id}"]`);
  if (out) out.textContent = el.value;
}

function render(s, force) {
  state = s;
  const st = s.settings || {};
  $("status").textContent = s.live ? (st.pending ? `switching to ${st.pending}…` : "live") : "no live session";
  $("status").className = "badge " + (s.live ? "on" : "off");
  for (const id of ["prompt", "negative", "strength", "control", "guidance", "blend", "motion_threshold"]) {
    if (force && $(id) === document.activeElement) $(id).blur();
    setIfIdle($(id), st[id]);
  }
  for (const id of ["mirror", "framing", "motion_adaptive", "similarity", "overlay"]) setIfIdle($(id), st[id]);
  if (st.style && $("style").value !== st.style && $("style").querySelector(`option[value="${st.style}"]`)) {
    $("style").value = st.style;
  }
  $("bypass").classList.toggle("active", st.mode === "bypass");
  $("blank").classList.toggle("active", st.mode === "blank");
  document.body.dataset.mode = st.mode || "";
  renderStats(s.stats || {}, s.history || []);
}

function ms(x) { return x === null || x === undefined ? "–" : `${x.toFixed(0)} ms`; }

function renderStats(t, history) {
  $("stat-fps").textContent = t.fps !== undefined ? `${t.fps.toFixed(1)} out · ${(t.input_fps || 0).toFixed(1)} in` : "–";
  $("stat-latency").textContent = `${ms(t.latency_p50_ms)} / ${ms(t.latency_p99_ms)}`;
  $("stat-drops").textContent = `${t.dropped ?? "–"} / ${t.skipped ?? "–"}`;
  $("stat-frames").textContent = `${t.delivered ?? "–"} delivered`;
  const stages = t.stages_ms || {};
  const top = Math.max(1, ...Object.values(stages));
  $("stages").replaceChildren(...Object.entries(stages).map(([k, v]) => {
    const row = document.createElement("div");
    row.className = "stage";
    row.innerHTML = `<span></span><span class="bar"></span><span></span>`;
    row.children[0].textContent = k;
    row.children[1].style.width = `${(100 * v / top).toFixed(0)}%`;
    row.children[2].textContent = `${v.toFixed(1)} ms`;
    return row;
  }));
  drawChart(history);
}

function drawChart(history) {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = "#555"; g.strokeRect(0, 0, c.width, c.height);
  if (history.length < 2) return;
  const top = Math.max(1, ...history.map((h) => h[1])) * 1.1;
  g.strokeStyle = "#6cf"; g.beginPath();
  history.forEach(([t, fps], i) => {
    const x = c.width * (1 + t / 60), y = c.height * (1 - fps / top);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#aaa"; g.fillText(`${top.toFixed(0)} fps`, 4, 12); g.fillText("last 60 s", c.width - 54, c.height - 4);
}

function connect() {
  const wsUrl = `ws://${location.host}/api/ws?token=${encodeURIComponent(TOKEN)}&input=${$("show-input").checked ? 1 : 0}`;
  const ws = new WebSocket(wsUrl);
  ws.binaryType = "blob";
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") { render(JSON.parse(ev.data)); return; }
    ev.data.slice(0, 1).arrayBuffer().then((head) => {
      const img = new Uint8Array(head)[0] === 0 ? $("preview-output") : $("preview-input");
      const old = img.src;
      img.src = URL.createObjectURL(ev.data.slice(1, ev.data.size, "image/jpeg"));
      img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    });
  };
  ws.onclose = () => { $("status").textContent = "disconnected: retrying"; $("status").className = "badge off";
                       setTimeout(connect, 1000); };
  return ws;
}

async function init() {
  document.querySelectorAll("input[type=range][data-command]").forEach((el) => {
    el.addEventListener("input", () => { document.querySelector(`output[for="${el.id}"]`).textContent = el.value; });
    el.addEventListener("change", () => send(`${el.dataset.command} ${el.value}`));
  });
  document.querySelectorAll("textarea[data-command]").forEach((el) => {
    el.addEventListener("change", () => { if (el.value.trim()) send(`${el.dataset.command} ${el.value.trim()}`); });
  });
  document.querySelectorAll("input[data-switch]").forEach((el) => {
    el.addEventListener("change", () => send(`${el.dataset.switch} ${el.checked ? "on" : "off"}`));
  });
  document.querySelectorAll("button[data-mode]").forEach((el) => {
    el.addEventListener("click", () => send(`${el.dataset.mode} ${el.classList.contains("active") ? "off" : "on"}`));
  });
  $("style").addEventListener("change", () => send(`style ${$("style").value}`));
  const lora = () => send($("lora").value === "none" ? "lora none" : `lora ${$("lora").value}:${$("lora-scale").value}`);
  $("lora").addEventListener("change", lora);
  $("lora-scale").addEventListener("input", () => { document.querySelector('output[for="lora-scale"]').textContent = $("lora-scale").value; });
  $("lora-scale").addEventListener("change", () => { if ($("lora").value !== "none") lora(); });
  $("seed-apply").addEventListener("click", () => send(`seed ${$("seed").value}`));
  $("command-form").addEventListener("submit", (ev) => { ev.preventDefault(); send($("command").value); });
  let ws = null;
  $("show-input").addEventListener("change", () => {
    $("input-figure").hidden = !$("show-input").checked;
    if (ws) { ws.onclose = null; ws.close(); }
    ws = connect();
  });
  try {
    const [styles, loras] = await Promise.all([api("/api/styles"), api("/api/loras")]);
    $("style").replaceChildren(...styles.styles.map((n) => new Option(n, n)));
    for (const n of loras.loras) $("lora").append(new Option(n, n));
    render(await api("/api/state"));
  } catch (e) {
    say(e.message, true);
  }
  ws = connect();
}

init();
