// Live pages: one WebSocket to /ws/events/, subscribed to the page's topics.
// An event first updates the DOM it names at once (a step's or run's data-state, an
// agent's data-status), then the page's live part is fetched again (?partial=1) and
// swapped in, so the page always ends up showing what the database says. Sequence
// numbers: a batch whose `after` is not the last one seen in its group means
// something was missed; so may a reconnect: both catch up from /api/v1/events/.

// Event families, their states and subject types: events/kinds.py, via base.html.
const NAMES = JSON.parse(document.getElementById("hive-event-names")?.textContent ?? "{}");
const STATES = Object.fromEntries(
  Object.entries(NAMES.families ?? {}).map(([family, { states }]) => [family, new Set(states)]));
const STEP_STATES = STATES.step ?? new Set();
const RUN_STATES = STATES.run ?? new Set();
const CATCH_UP_PAGES = 20; // past 20 x 500 events, the refresh alone brings the page back

export const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export async function apiPost(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body ?? {}),
  });
  let data = null;
  try { data = await response.json(); } catch { /* an empty or HTML body */ }
  return { ok: response.ok, status: response.status, data };
}

export function flash(text, kind = "error") {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = text;
  box.className = `flash ${kind}`;
  box.hidden = !text;
}

function subjectRun(subject) {
  const match = /^run:(\d+)$/.exec(subject);
  return match ? match[1] : null;
}

// The fast path: what one event says, written straight into the DOM.
function applyHint(event) {
  const [family, what] = event.kind.split(".", 2);
  const seq = String(event.seq);
  const runId = subjectRun(event.subject);
  if (family === "step" && runId && STEP_STATES.has(what) && event.data?.step) {
    // `step.waiting` also says why a step stays pending (an agent, capacity, a rate, a
    // paused run): only a step waiting for approval is in the state `waiting`.
    const state = what === "waiting" && event.data.reason !== "approval" ? "pending" : what;
    const selector = `[data-run="${runId}"] [data-step-id="${CSS.escape(event.data.step)}"]`;
    for (const node of document.querySelectorAll(selector)) {
      node.dataset.state = state;
      node.dataset.seq = seq;
      const label = node.querySelector(".node-state");
      if (label) label.textContent = state;
    }
  } else if (family === "run" && runId && RUN_STATES.has(what)) {
    for (const node of document.querySelectorAll(`[data-run-id="${runId}"]`)) {
      node.dataset.runState = what;
      node.dataset.seq = seq;
      const label = node.querySelector("[data-run-state-label]");
      if (label) { label.textContent = what; label.className = `state ${what}`; }
    }
  } else if (family === "agent" && event.subject.startsWith("agent:")) {
    const status = event.kind === "agent.offline" ? "offline"
      : event.kind === "agent.status" ? event.data?.to : null;
    if (status) {
      const name = event.subject.slice("agent:".length);
      for (const card of document.querySelectorAll(`[data-agent="${CSS.escape(name)}"]`)) {
        card.dataset.status = status;
        card.dataset.seq = seq;
      }
    }
  }
  document.dispatchEvent(new CustomEvent("hive:applied", { detail: { seq: event.seq } }));
}

// A part of the page fetched again when an event matches it: one request at a time,
// and one more after it if events came meanwhile (so the last one is always seen).
class Region {
  constructor(element, url, patterns) {
    this.element = element;
    this.url = url;
    this.patterns = patterns; // "*", "run:" (a prefix) or "run:5" (a subject)
    this.minInterval = Number(element.dataset.minInterval || 0);
    this.busy = false;
    this.dirty = false;
    this.last = 0;
  }

  matches(subject) {
    return this.patterns.some((p) => p === "*" || (p.endsWith(":") ? subject.startsWith(p) : subject === p));
  }

  async refresh() {
    if (this.busy) { this.dirty = true; return; }
    this.busy = true;
    try {
      do {
        this.dirty = false;
        const wait = this.last + this.minInterval - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        this.last = performance.now();
        const response = await fetch(this.url, { credentials: "same-origin" });
        if (response.ok && this.element.isConnected) {
          this.element.innerHTML = await response.text();
          document.dispatchEvent(new CustomEvent("hive:refreshed", { detail: { url: this.url } }));
        }
      } while (this.dirty);
    } catch {
      this.dirty = true; // the server is away; the reconnect's catch-up refreshes again
    } finally {
      this.busy = false;
    }
  }
}

export class Live {
  constructor() {
    this.seq = Number(document.body.dataset.seq || 0);
    this.topics = new Set();
    this.regions = [];
    this.groupSeq = new Map(); // group -> the last batch's `upto`
    this.delay = 250;
    this.socket = null;
    this.catchingUp = null;
  }

  watch(topic) {
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    if (this.socket?.readyState === WebSocket.OPEN) this.subscribe(topic);
  }

  region(element, url, patterns) {
    const region = new Region(element, url, patterns);
    this.regions.push(region);
    return region;
  }

  subscribe(topic) {
    const message = topic === "overview" ? { subscribe: "overview" }
      : { subscribe: "run", run: Number(topic.split(":")[1]) };
    this.socket.send(JSON.stringify(message));
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/events/`);
    this.socket = socket;
    socket.onopen = () => {
      this.delay = 250;
      this.groupSeq.clear();
      this.status("on");
      for (const topic of this.topics) this.subscribe(topic);
      this.catchUp(); // whatever happened while the page loaded or the socket was down
    };
    socket.onmessage = (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch { return; }
      if (data.type === "events") this.receive(data);
    };
    socket.onclose = () => {
      this.status("off");
      if (this.socket !== socket) return;
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 5000);
    };
  }

  status(state) {
    const badge = document.getElementById("live-status");
    if (badge) { badge.dataset.live = state; badge.textContent = state === "on" ? "live" : "offline"; }
    document.body.dataset.live = state;
  }

  receive(batch) {
    const previous = this.groupSeq.get(batch.group);
    this.groupSeq.set(batch.group, batch.upto);
    if (batch.after === null || (previous !== undefined && batch.after !== previous)) {
      this.catchUp(); // a batch of this group never reached us: ask the record
    }
    this.apply(batch.events);
  }

  apply(events) {
    const touched = new Set();
    for (const event of events) {
      applyHint(event);
      if (event.seq > this.seq) this.seq = event.seq;
      for (const region of this.regions) if (region.matches(event.subject)) touched.add(region);
    }
    for (const region of touched) region.refresh();
  }

  // Everything after the last sequence number seen, from the database, then every
  // region fetched again: the page equals the database even if the stream lost events.
  catchUp() {
    if (this.catchingUp) { this.catchingUp.again = true; return this.catchingUp.promise; }
    const state = { again: false };
    state.promise = (async () => {
      try {
        do {
          state.again = false;
          for (let page = 0; page < CATCH_UP_PAGES; page++) {
            const response = await fetch(`/api/v1/events/?after=${this.seq}&limit=500`, { credentials: "same-origin" });
            if (!response.ok) break;
            const body = await response.json();
            for (const event of body.results) applyHint(event);
            this.seq = Math.max(this.seq, body.last);
            if (!body.more) break;
          }
          await Promise.all(this.regions.map((region) => region.refresh()));
        } while (state.again);
      } catch { /* offline: the next open catches up */ }
      finally { this.catchingUp = null; document.body.dataset.synced = String(this.seq); }
    })();
    this.catchingUp = state;
    return state.promise;
  }
}

// Buttons that act through the REST API (the one way to act): data-url, and
// data-confirm or data-reason (a prompt whose answer is the body's `reason`).
document.addEventListener("click", async (click) => {
  const button = click.target.closest("button[data-action][data-url]");
  if (!button) return;
  let body = {};
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  if (button.dataset.reason) {
    const reason = window.prompt(button.dataset.reason, "");
    if (reason === null) return;
    body = { reason };
  }
  button.disabled = true;
  const result = await apiPost(button.dataset.url, body);
  button.disabled = false;
  if (result.ok) {
    flash("");
    live.apply([]);
    for (const region of live.regions) region.refresh();
  } else {
    flash(result.data?.error?.message || `${button.dataset.action} failed (${result.status})`);
  }
});

// Heartbeat ages count up between refreshes.
setInterval(() => {
  for (const node of document.querySelectorAll("[data-heartbeat]")) {
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(node.dataset.heartbeat)) / 1000));
    node.textContent = `${seconds} s`;
  }
}, 1000);

export const live = new Live();
window.hiveLive = live;
const main = document.getElementById("live");
const topics = (document.body.dataset.topics || "").split(/\s+/).filter(Boolean);
for (const topic of topics) live.watch(topic);
if (main) {
  const patterns = (document.body.dataset.refresh || "").split(",").filter(Boolean);
  const params = new URLSearchParams(location.search);
  params.set("partial", "1");
  live.region(main, `${location.pathname}?${params}`, patterns);
}
live.connect();
