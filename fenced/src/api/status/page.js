"use strict";
// The fencer's status page. Everything shown comes from the API (/v1/...) with the viewer's own
// credentials, and everything from the API is put in the page as text (textContent, text nodes,
// attribute values), never parsed as HTML: a target or reason named "<img onerror=...>" is shown,
// not run. A bearer token, when one is needed, is kept in this tab's sessionStorage only.
(() => {
  const KEY = "palisade-token";
  const HISTORY = 50;
  const $ = (id) => document.getElementById(id);
  const S = {
    token: sessionStorage.getItem(KEY) || "",
    ops: new Map(), // id -> newest known version of the operation
    seen: new Map(), // id -> {ms: first shown (Date.now()), states: [states shown, in order]}
    targets: [],
    devices: [],
    pause: null,
    ledger: null,
    gen: 0, // bumped to end an event stream (new token)
  };

  class AuthError extends Error {
    constructor(status, body) {
      super(errText(status, body));
      this.status = status;
    }
  }

  function errText(status, body) {
    const e = body && body.error;
    if (!e) return "HTTP " + status;
    return status + " " + e.code + ": " + e.message + (e.hint ? " (" + e.hint + ")" : "");
  }

  // Builds an element from text only: children are nodes or strings (made text nodes).
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const k of kids.flat(4)) {
      if (k === undefined || k === null || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  const kv = (label, ...value) => el("p", { class: "kv" }, label + ": ", el("b", {}, ...value));
  const badge = (text, cls) => el("span", { class: "badge " + (cls || text) }, text);
  const time = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z" : "-");
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const terminal = (o) => o.state === "succeeded" || o.state === "failed";
  const label = (d, p) => (p ? d + ":" + p : d);

  async function api(path, opts) {
    const o = opts || {};
    const headers = { Accept: o.accept || "application/json" };
    if (S.token) headers.Authorization = "Bearer " + S.token;
    const r = await fetch(path, { headers, cache: "no-store", credentials: "same-origin", signal: o.signal });
    if (!r.ok) {
      const body = await r.json().catch(() => null);
      if (r.status === 401 || r.status === 403) throw new AuthError(r.status, body);
      throw new Error(errText(r.status, body));
    }
    return o.raw ? r : r.json();
  }

  function setConn(state, why) {
    const c = $("conn");
    c.className = "badge " + ({ live: "live", refused: "bad", disconnected: "warn" }[state] || "unknown");
    c.textContent = state;
    c.title = why || "";
  }

  function fail(e) {
    if (e instanceof AuthError) {
      // Nothing the refused caller might have seen before stays on the page.
      S.ops.clear();
      S.targets = [];
      S.devices = [];
      S.pause = null;
      S.ledger = null;
      render();
      $("auth").hidden = false;
      $("data").hidden = true;
      $("auth-error").textContent = e.message;
      setConn("refused", e.message);
    } else {
      setConn("disconnected", String(e && e.message ? e.message : e));
    }
  }

  // A version order for one operation: state, then steps done, then steps announced.
  function rank(o) {
    const st = { delayed: 1, running: 2, succeeded: 3, failed: 3 }[o.state] || 0;
    return st * 1e6 + (o.attempts || []).length * 100 + (o.pending || []).length;
  }

  function mergeOp(op) {
    const old = S.ops.get(op.id);
    if (old && rank(old) > rank(op)) return;
    S.ops.set(op.id, op);
    let s = S.seen.get(op.id);
    if (!s) S.seen.set(op.id, (s = { ms: Date.now(), states: [] }));
    if (s.states[s.states.length - 1] !== op.state) s.states.push(op.state);
    for (const t of S.targets) {
      if (t.name !== op.target) continue;
      if (!terminal(op)) t.in_flight = op.id;
      else {
        if (t.in_flight === op.id) t.in_flight = null;
        if (!t.last_operation || t.last_operation.id <= op.id) t.last_operation = op;
      }
    }
  }

  function trim() {
    const done = [...S.ops.values()].filter(terminal).sort((a, b) => b.id - a.id);
    for (const o of done.slice(HISTORY)) {
      S.ops.delete(o.id);
      S.seen.delete(o.id);
    }
  }

  async function loadAll() {
    const [targets, devices, history, pause] = await Promise.all([
      api("/v1/targets"),
      api("/v1/devices"),
      api("/v1/history?limit=" + HISTORY),
      api("/v1/pause"),
    ]);
    S.targets = targets;
    S.devices = devices;
    S.pause = pause;
    for (const op of history) mergeOp(op);
    for (const t of targets) if (t.last_operation) mergeOp(t.last_operation);
    $("auth").hidden = true;
    $("data").hidden = false;
    $("forget").hidden = !S.token;
    trim();
    render();
  }

  async function verifyLedger() {
    $("ledger").textContent = "verifying...";
    try {
      S.ledger = Object.assign(await api("/v1/ledger/verify"), { at: Date.now() });
    } catch (e) {
      S.ledger = { error: e.message, at: Date.now() };
      if (e instanceof AuthError) return fail(e);
    }
    renderLedger();
  }

  function onEvent(name, data) {
    let v;
    try {
      v = JSON.parse(data);
    } catch (e) {
      return;
    }
    if (name === "operation" && v.operation) {
      mergeOp(v.operation);
      trim();
      render();
    } else if (name === "pause") {
      S.pause = { paused: v.paused, by: v.by, reason: v.reason, since_ms: Date.now() };
      render();
    } else if (name === "lagged") {
      // Events were dropped for this page: read the state again rather than show a gap.
      loadAll().catch(fail);
    }
  }

  // Reads /v1/events with fetch (EventSource cannot send an Authorization header) and parses
  // the server-sent events; reconnects with backoff, reloading everything each time.
  async function stream(gen) {
    for (let backoff = 1000; gen === S.gen; ) {
      const ctl = new AbortController();
      try {
        const r = await api("/v1/events", { raw: true, signal: ctl.signal, accept: "text/event-stream" });
        // Subscribed before loading: nothing that happens during the load is lost.
        await loadAll();
        setConn("live");
        backoff = 1000;
        const rd = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          if (gen !== S.gen) {
            ctl.abort();
            return;
          }
          const { value, done } = await rd.read();
          if (done) break;
          buf = (buf + dec.decode(value, { stream: true })).replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (data.length) onEvent(name, data.join("\n"));
          }
        }
        setConn("disconnected", "the event stream ended");
      } catch (e) {
        fail(e);
        if (e instanceof AuthError) return;
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
  }

  function start() {
    S.gen += 1;
    stream(S.gen);
    verifyLedger();
  }

  function steps(op) {
    const items = (op.attempts || []).map((a) => {
      const ok = a.result === "confirmed";
      const what = ok
        ? "confirmed " + a.state + (a.already ? " (already)" : "") + (a.identity ? ", identity " + a.identity : "") +
          (a.pill ? ", pill on " + a.pill.written + "/" + a.pill.disks + " disks, msgwait " + a.pill.msgwait_ms + " ms" : "")
        : "failed " + a.code + ": " + a.message;
      return el("li", { class: ok ? "ok" : "bad" }, "L" + a.level + " " + label(a.device, a.port) + " " + a.phase + ", " + (a.finished_ms - a.started_ms) + " ms: " + what);
    });
    for (const p of op.pending || []) {
      items.push(el("li", { class: "running" }, "L" + p.level + " " + label(p.device, p.port) + ": " + p.command + " (sent or about to be)"));
    }
    return items.length ? el("ul", { class: "steps" }, items) : null;
  }

  function outcomeText(op) {
    const o = op.outcome;
    if (!o) return op.state === "delayed" ? "waiting out the fence-race delay (" + op.delay_ms + " ms)" : "in progress";
    if (o.outcome === "succeeded") {
      const c = o.confirmation || {};
      return o.summary + " [confirmed by " + String(c.method || "?").replace(/_/g, " ") + (c.by ? " by " + c.by + ": " + c.reason : "") + "]" +
        (o.powered_on === false ? " - did NOT power back on" : "");
    }
    return "NOT FENCED: " + o.code + ": " + o.message;
  }

  const opAttrs = (op) => {
    const s = S.seen.get(op.id) || { ms: "", states: [] };
    return { "data-op-id": op.id, "data-state": op.state, "data-seen-ms": s.ms, "data-states": s.states.join(" ") };
  };

  function opCard(op) {
    return el("div", Object.assign({ class: "card" }, opAttrs(op)),
      el("h3", {}, "#" + op.id + " " + op.action + " " + op.target, badge(op.state)),
      kv("requested", time(op.created_ms), " by ", op.requested_by.identity),
      op.reason ? kv("reason", op.reason) : null,
      kv("status", outcomeText(op)),
      steps(op));
  }

  function renderLedger() {
    const p = $("ledger");
    const l = S.ledger;
    if (!l) {
      p.className = "muted";
      p.textContent = "not checked yet";
    } else if (l.error) {
      p.className = "err";
      p.textContent = "could not verify: " + l.error;
    } else if (l.ok) {
      const r = l.report || {};
      p.className = "ok";
      p.textContent = "intact: " + r.records + " records (" + r.signed + " signed, " + r.unsigned + " unsigned), head #" + r.head_seq + " " +
        String(r.head_hash || "").slice(0, 16) + "..., checked " + time(l.at);
    } else {
      p.className = "err";
      p.textContent = "FAILS VERIFICATION at record #" + l.first_bad_seq + ": " + l.detail + " (checked " + time(l.at) + ")";
    }
  }

  function render() {
    const pz = $("pause");
    pz.hidden = !(S.pause && S.pause.paused);
    pz.textContent = pz.hidden ? "" : "Fencing is PAUSED: new operations are refused. By " + (S.pause.by || "?") + " since " + time(S.pause.since_ms) + ": " + (S.pause.reason || "");
    renderLedger();

    const ops = [...S.ops.values()].sort((a, b) => b.id - a.id);
    const live = ops.filter((o) => !terminal(o));
    $("inflight").replaceChildren(...(live.length ? live.map(opCard) : [el("p", { class: "muted" }, "none")]));

    $("targets").replaceChildren(...S.targets.map((t) => {
      const cur = t.in_flight != null ? S.ops.get(t.in_flight) : null;
      const last = t.last_operation;
      const state = cur ? badge("#" + cur.id + " " + cur.action + " " + cur.state, cur.state)
        : last ? badge(last.action + " " + last.state, last.state) : badge("no operations", "unknown");
      return el("div", { class: "card", "data-target": t.name },
        el("h3", {}, t.name, state),
        t.levels.map((lv, i) => kv("level " + (i + 1), lv.map((d) => label(d.device, d.port) + (d.expected_identity ? " (expects " + d.expected_identity + ")" : "")).join(" + "))),
        t.delay_s || t.random_delay_s ? kv("fence-race delay", t.delay_s + " s + up to " + t.random_delay_s + " s") : null,
        last ? kv("last", "#" + last.id + " " + time(last.finished_ms || last.created_ms) + ": " + outcomeText(last)) : null);
    }));

    $("devices").replaceChildren(...S.devices.map((d) => el("div", { class: "card", "data-device": d.name, "data-health": d.health },
      el("h3", {}, d.name, badge(d.health)),
      kv("kind", d.kind, " at ", d.address),
      d.identity ? kv("identity", d.identity.kind + " " + d.identity.value, d.identity.description ? " (" + d.identity.description + ")" : "") : kv("identity", "not read yet"),
      d.error ? el("p", { class: "reason err" }, d.error) : null,
      kv("checked", time(d.checked_ms)),
      d.targets.length ? kv("targets", d.targets.join(", ")) : null,
      d.outlets && d.outlets.length ? kv("outlets", d.outlets.map((o) => o.id + (o.name ? " " + o.name : "") + (o.state ? " " + o.state : "")).join(", ")) : null,
      (d.warnings || []).map((w) => el("p", { class: "reason warn" }, w)))));

    const head = el("thead", {}, el("tr", {}, ["#", "when", "target", "action", "state", "outcome", "steps", "by / reason"].map((h) => el("th", {}, h))));
    const rows = ops.map((op) => el("tr", opAttrs(op),
      el("td", { "data-label": "#" }, String(op.id)),
      el("td", { "data-label": "when" }, time(op.created_ms)),
      el("td", { "data-label": "target" }, op.target),
      el("td", { "data-label": "action" }, op.action),
      el("td", { "data-label": "state" }, badge(op.state)),
      el("td", { "data-label": "outcome", class: "outcome" }, outcomeText(op)),
      el("td", { "data-label": "steps" }, steps(op)),
      el("td", { "data-label": "by" }, op.requested_by.identity, op.reason ? " - " + op.reason : "")));
    $("history").replaceChildren(ops.length ? el("table", {}, head, el("tbody", {}, rows)) : el("p", { class: "muted" }, "no operations yet"));
    $("updated").textContent = "updated " + time(Date.now());
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    S.token = $("token").value.trim();
    $("token").value = "";
    if (S.token) sessionStorage.setItem(KEY, S.token);
    else sessionStorage.removeItem(KEY);
    start();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    S.token = "";
    location.reload();
  });
  $("ledger-verify").addEventListener("click", verifyLedger);
  // Verification reads every record (one signature each), so it is repeated only now and then.
  setInterval(() => {
    if ($("auth").hidden) verifyLedger();
  }, 600000);
  // Health has no events: re-read devices and targets now and then.
  setInterval(() => {
    if ($("auth").hidden) {
      Promise.all([api("/v1/devices"), api("/v1/targets")]).then(([d, t]) => {
        S.devices = d;
        S.targets = t;
        for (const o of S.ops.values()) mergeOp(o);
        render();
      }, fail);
    }
  }, 30000);
  start();
})();
