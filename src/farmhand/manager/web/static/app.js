// farmhand web UI: one small script, no framework, no build step.
//
// Every page is a client of the JSON API (/api/...), authenticated by the session
// cookie; state-changing calls repeat the page's CSRF nonce in X-CSRF-Token. Live
// updates come from /api/events (Server-Sent Events): each event only says what changed,
// and the page refetches what it shows, at most a few times a second. A browser holds
// one such stream for all its tabs: this same script, run as a shared worker
// (`serveLiveEvents`), owns it.
"use strict";

(() => {
  // ------------------------------------------------------- the event stream

  // One EventSource on /api/events, open while someone looks: `want(true)` opens it (or
  // a new one, when the last ended for good), `want(false)` closes it once nobody has
  // wanted it for IDLE_MS (switching between two tabs does not reconnect), `want(false,
  // true)` at once. A stream never ends on its own and a browser gives a host only 6
  // connections over HTTP/1.1: one kept for a tab nobody sees is one fewer for every
  // page and fetch of that browser. `post` hears {type: "state", state} (connecting,
  // live, reconnecting, closed, idle), {type: "open"} on every (re)connect (events may
  // have been missed: refetch) and {type: "event", data} with the event's JSON.
  function liveStream(post) {
    const KINDS = ["job", "task", "runner", "output"], IDLE_MS = 10_000;
    let source = null, idle = null, state = "idle";
    const set = (name) => { state = name; post({ type: "state", state }); };
    const close = () => {
      clearTimeout(idle);
      idle = null;
      if (source) { source.close(); source = null; set("idle"); }
    };
    const open = () => {
      source = new EventSource("/api/events");
      const mine = source;
      set("connecting");
      source.onopen = () => { set("live"); post({ type: "open" }); };
      source.onerror = () => { if (source === mine) set(mine.readyState === EventSource.CLOSED ? "closed" : "reconnecting"); };
      for (const kind of KINDS) source.addEventListener(kind, (message) => post({ type: "event", data: message.data }));
    };
    return {
      state: () => state,
      want(yes, now = false) {
        if (!yes) {
          if (now) close();
          else if (source && !idle) idle = setTimeout(close, IDLE_MS);
          return;
        }
        clearTimeout(idle);
        idle = null;
        // A stream the browser gave up on (401 after a sign-out, the manager gone for
        // good) is tried afresh when a page is (re)loaded or shown again.
        if (!source || source.readyState === EventSource.CLOSED) open();
      },
    };
  }

  // The shared worker's side: every tab of the browser (of one signed-in user: the
  // worker's name carries it) connects a port; the stream stays open while one of them
  // is visible and every event goes to all of them.
  function serveLiveEvents() {
    const ports = new Map(); // port -> whether its tab is visible
    const stream = liveStream((message) => ports.forEach((_, port) => port.postMessage(message)));
    self.addEventListener("connect", (connection) => {
      const port = connection.ports[0];
      ports.set(port, false);
      port.onmessage = ({ data }) => {
        if (data.type === "bye") ports.delete(port);
        else ports.set(port, Boolean(data.visible));
        stream.want([...ports.values()].some(Boolean));
      };
      port.postMessage({ type: "state", state: stream.state() });
    });
  }

  if (typeof document === "undefined") {
    serveLiveEvents();
    return;
  }

  // `let`: a password change starts a new session, with a new nonce (accountPage).
  let csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const body = document.body;
  const isAdmin = body.dataset.admin === "true";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // ------------------------------------------------------------------ helpers

  const esc = (value) =>
    String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  // A name people choose (a runner, a hostname, an address, a job), escaped, with where
  // it may break marked (<wbr>): after each - . _ / : @ and every BREAK_RUN characters of
  // a longer run without one. In a `.breakable` element (app.css) it breaks only there:
  // `render-node-studio-b-workstation-0042` at its hyphens (a browser keeps "-0042" to
  // its word: a minus sign?), `gpu.box.studio.lan` at its dots, and a 60-letter name
  // without either in pieces, so the table gives its column the width of one piece,
  // not of the whole name, nor of one letter (which broke names mid-word everywhere).
  const BREAK_RUN = 12, PIECE = new RegExp(`[^-._/:@]{1,${BREAK_RUN}}[-._/:@]*|[-._/:@]+`, "gu");
  const breakable = (value) =>
    String(value ?? "").split(/(\s+)/).map((word) => (word.match(PIECE) || []).map(esc).join("<wbr>")).join("");

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  // The session this page was drawn for is over (signed out elsewhere, the account
  // disabled, its token revoked): to the sign-in page, which says so, and back here after.
  function sessionEnded(next = location.pathname + location.search) {
    location.href = `/login?error=session-ended&next=${encodeURIComponent(next)}`;
  }

  async function call(method, url, payload) {
    const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrf;
    if (payload !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    const response = await fetch(url, init);
    if (response.status === 401) {
      sessionEnded();
      throw new ApiError(401, "signed out");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = text; }
    if (!response.ok) {
      const detail = (data && data.detail) || response.statusText || "request failed";
      throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    return { data, response };
  }
  const api = async (method, url, payload) => (await call(method, url, payload)).data;
  // One page of a list (GET /api/jobs, /api/jobs/{id}/tasks): its items and how many
  // match in all (the X-Total-Count header).
  async function apiPage(url) {
    const { data, response } = await call("GET", url);
    const total = Number(response.headers.get("X-Total-Count"));
    return { items: data, total: Number.isFinite(total) && response.headers.has("X-Total-Count") ? total : data.length };
  }

  function toast(message, kind = "info") {
    const box = $("#toasts");
    if (!box) return;
    const item = document.createElement("div");
    item.className = "toast " + kind;
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
  }

  const fail = (error) => { if (!(error instanceof ApiError && error.status === 401)) toast(error.message, "error"); };

  // A message as a sentence: one full stop at its end (the manager's details have none,
  // or one).
  const sentence = (text) => (/[.!?]$/.test(text) ? text : `${text}.`);

  // The seconds a 503's Retry-After header asks a client to wait (a number of seconds or
  // an HTTP date), from 1 to `most`; `fallback` when it has none the page can use.
  function retryAfter(header, fallback, most = 300) {
    const value = (header || "").trim();
    let seconds = value === "" ? NaN : Number(value);
    if (value !== "" && !Number.isFinite(seconds)) seconds = (Date.parse(value) - Date.now()) / 1000;
    if (!Number.isFinite(seconds)) seconds = fallback;
    return Math.min(most, Math.max(1, Math.ceil(seconds)));
  }

  // Previews the manager makes when first asked for (web/thumbnails.py) are shown
  // through `showImage`, not a bare <img src>: while the manager is busy making others
  // it answers 503 with Retry-After, which an <img> can neither read nor get over (it
  // stayed a broken image). Fetched, a busy answer (or no answer: the manager
  // restarting) is asked again after its Retry-After, at most IMAGE_TRIES times in all,
  // with a word where the image goes meanwhile (`.image-state`, the reason in its
  // title); anything else ends in "No preview", never a broken-image icon. The image is
  // hidden while it has a `data-state` (app.css). A newer URL for the same <img> (the
  // full view moved to another frame) or the <img> gone from the page ends the tries.
  const IMAGE_TRIES = 8, IMAGE_WAIT = 5;
  function imageState(img, state, text = "", why = "") {
    let note = img.nextElementSibling;
    if (!note || !note.classList.contains("image-state")) note = null;
    if (!state) {
      delete img.dataset.state;
      if (note) note.remove();
      return;
    }
    img.dataset.state = state;
    if (!note) {
      note = document.createElement("span");
      note.className = "image-state";
      img.after(note);
    }
    note.textContent = text;
    note.title = why;
  }
  // An image the browser can load as it is (a PNG frame's own file): no tries.
  function showPlainImage(img, url) {
    img.dataset.src = url;
    imageState(img, "");
    img.src = url;
  }
  async function showImage(img, url, tries = 1) {
    const current = () => img.isConnected && img.dataset.src === url;
    if (tries === 1) {
      img.dataset.src = url;
      img.removeAttribute("src");
      imageState(img, "loading", "Loading…");
    } else if (!current()) {
      return;
    }
    let response = null;
    try { response = await fetch(url, { credentials: "same-origin" }); } catch { /* no answer: as busy */ }
    if (!current()) return;
    if (response && response.ok) {
      let picture = null;
      try { picture = await response.blob(); } catch { /* cut off: as busy below */ }
      if (!current()) return;
      if (picture) {
        const object = URL.createObjectURL(picture);
        const settle = (event) => {
          img.removeEventListener("load", settle);
          img.removeEventListener("error", settle);
          URL.revokeObjectURL(object); // the <img> keeps what it decoded
          if (img.dataset.src !== url) return;
          if (event.type === "load") imageState(img, "");
          else imageState(img, "failed", "No preview", "the manager's answer is not an image");
        };
        img.addEventListener("load", settle);
        img.addEventListener("error", settle);
        img.src = object;
        return;
      }
    }
    let detail = "";
    if (response && !response.ok) {
      try { detail = (await response.json()).detail; } catch { /* not JSON */ }
      if (!current()) return;
      if (typeof detail !== "string") detail = "";
    }
    // No answer, a busy one, or an image cut off on its way: asked again.
    if ((!response || response.ok || response.status === 503) && tries < IMAGE_TRIES) {
      const wait = retryAfter(response && response.headers.get("Retry-After"), IMAGE_WAIT);
      const why = detail || (!response ? "the manager did not answer" : response.ok ? "the image was cut off" : "the manager is busy");
      imageState(img, "busy", "Manager busy: trying again…", `${sentence(why)} Asked again in ${wait} s (try ${tries + 1} of ${IMAGE_TRIES}).`);
      setTimeout(() => showImage(img, url, tries + 1), wait * 1000);
      return;
    }
    const why = response && !response.ok && response.status !== 503
      ? `the manager answered ${response.status}${detail ? `: ${detail}` : ""}`
      : `the manager stayed busy: asked ${IMAGE_TRIES} times${detail ? ` (${detail})` : ""}`;
    imageState(img, "failed", "No preview", why);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
    if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
    return `${s}s`;
  }
  // A frame's time: tenths of a second while it is short (tiny test renders take 0.3 s).
  const perFrame = (seconds) => (seconds === null || seconds === undefined ? "–" : seconds < 10 ? `${seconds.toFixed(1)}s` : duration(seconds));
  const since = (iso) => (iso ? (Date.now() - Date.parse(iso)) / 1000 : null);
  const ago = (iso) => (iso ? duration(since(iso)) + " ago" : "never");
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const badge = (status) => `<span class="badge s-${esc(status)}">${esc(status)}</span>`;
  const bar = (pct, status) =>
    `<div class="bar${status === "completed" ? " done" : status === "failed" ? " bad" : ""}" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${Math.round(pct)}" aria-label="${Math.round(pct)} %" data-pct="${pct}"><span></span></div>`;
  // Widths are set through the CSSOM: the page's CSP forbids inline style attributes.
  const paintBars = (root = document) => $$("[data-pct]", root).forEach((el) => { el.firstElementChild.style.width = `${el.dataset.pct}%`; });
  function setBar(el, pct, status) {
    el.dataset.pct = pct;
    el.setAttribute("aria-valuenow", String(Math.round(pct)));
    el.classList.toggle("done", status === "completed");
    el.classList.toggle("bad", status === "failed");
    el.firstElementChild.style.width = `${pct}%`;
  }
  const gib = (bytes) => (bytes ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : "");
  const memory = (bytes) => (!bytes ? "–" : bytes < 1024 ** 3 ? `${Math.round(bytes / 1024 ** 2)} MiB` : gib(bytes));
  // Any amount of storage in binary units: "0 B", "512 B", "3.4 KiB", "12.0 MiB", "1.5 TiB".
  function size(bytes) {
    if (bytes === null || bytes === undefined || !isFinite(bytes)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let value = Math.max(0, bytes), unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
  }
  const plural = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;

  // Live refreshes show what changed in the tables and lists people are using. Building
  // them anew would replace the button under a pointer that is down (the browser then
  // fires no click: the press is lost), the text someone selects and the focus. So
  // `morph` shows `content` (HTML, or nodes) in `container` as innerHTML or replaceChildren
  // would, but keeps every node still wanted and updates it in place: unchanged rows and
  // buttons stay the same elements, a changed cell gets its new text and attributes.
  // Siblings are matched by kind (`nodeKind`): a row, link or button only with one that
  // does the same thing (same data- attributes and link), so a row that moves keeps its
  // buttons and a button never starts doing something else under a pointer; other
  // elements with their tag. Listeners on `content`'s nodes are not kept: containers
  // handle their clicks themselves.
  const nodeKind = (node) => node.nodeType !== Node.ELEMENT_NODE ? node.nodeName
    : [node.tagName, node.id, node.matches("tr, a, button") ? JSON.stringify({ ...node.dataset }) + (node.getAttribute("href") || "") : ""].join("|");

  function patchNode(old, fresh) {
    if (old.nodeType !== Node.ELEMENT_NODE) {
      if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
      return;
    }
    for (const { name } of [...old.attributes]) if (!fresh.hasAttribute(name)) old.removeAttribute(name);
    for (const { name, value } of fresh.attributes) if (name !== "style" && old.getAttribute(name) !== value) old.setAttribute(name, value);
    // The page's CSP lets styles in only through the CSSOM (a style attribute set is refused).
    if (old.style.cssText !== fresh.style.cssText) old.style.cssText = fresh.style.cssText;
    patchChildren(old, [...fresh.childNodes]);
  }

  function patchChildren(parent, wanted) {
    const spare = new Map();
    for (const node of parent.childNodes) {
      const kind = nodeKind(node);
      if (!spare.has(kind)) spare.set(kind, []);
      spare.get(kind).push(node);
    }
    const kept = wanted.map((fresh) => spare.get(nodeKind(fresh))?.shift());
    // What goes, goes first: the nodes that stay then need no moving.
    for (const left of spare.values()) left.forEach((node) => node.remove());
    wanted.forEach((fresh, i) => {
      const node = kept[i] || fresh;
      if (kept[i]) patchNode(kept[i], fresh);
      const here = parent.childNodes[i] || null;
      if (here !== node) parent.insertBefore(node, here);
    });
  }

  function morph(container, content) {
    let nodes = content;
    if (typeof content === "string") {
      const template = document.createElement("template");
      template.innerHTML = content;
      nodes = [...template.content.childNodes];
    }
    keepFocus(container, () => patchChildren(container, nodes));
  }

  // A focused control that a refresh did replace (its row went, or it does something
  // else now): someone moving through the table with the keyboard must not be thrown
  // back to the top of the page. Focus goes to the control that does the same thing
  // (same tag, data- attributes, label and link), else to the one at the same place (the
  // n-th link or button of `container`), if there still is one.
  const controlKey = (el) => [el.tagName, JSON.stringify({ ...el.dataset }), el.getAttribute("aria-label") || el.textContent.trim(), el.getAttribute("href") || ""].join("|");

  function keepFocus(container, rewrite) {
    const focusables = () => $$("a[href], button, [tabindex]", container);
    const active = container.contains(document.activeElement) ? document.activeElement : null;
    const index = active ? focusables().indexOf(active) : -1;
    const key = active ? controlKey(active) : null;
    rewrite();
    if (index < 0 || container.contains(document.activeElement)) return;
    const same = focusables().find((el) => controlKey(el) === key);
    (same || focusables()[index])?.focus();
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    if (button) {
      const old = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = old; }, 1500);
    }
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy]");
    if (button) copy($("#" + button.dataset.copy).textContent, button);
  });

  // ------------------------------------------------------------- live updates

  // This page's end of the browser's one event stream: a port of the shared worker
  // (`serveLiveEvents`), or, where there are no shared workers, a stream of its own,
  // open only while the tab is visible. Either way it says whether it is visible, so no
  // stream stays open for tabs nobody looks at. Made once; `listen(fn)` hands `fn`
  // every message (`liveStream`), starting with the present state.
  function liveEvents() {
    if (liveEvents.hub) return liveEvents.hub;
    const listeners = new Set();
    let last = { type: "state", state: "connecting" };
    const emit = (message) => {
      // A stream the browser gave up on was most often refused on reconnecting: the
      // session ended (a 401, which EventSource does not tell). Ask once; a 401 goes to
      // the sign-in page (`call`), anything else leaves "offline — reload". A page with
      // no poll of its own sat at "offline" forever for a disabled student.
      if (message.type === "state" && message.state === "closed" && last.state !== "closed") {
        call("GET", "/api/auth/me").catch(() => {});
      }
      if (message.type === "state") last = message;
      listeners.forEach((fn) => fn(message));
    };
    const visible = () => document.visibilityState === "visible";
    const ownStream = () => {
      const stream = liveStream(emit);
      const say = () => stream.want(visible());
      document.addEventListener("visibilitychange", say);
      window.addEventListener("pageshow", say);
      window.addEventListener("pagehide", () => stream.want(false, true));
      say();
    };
    let worker = null;
    if (window.SharedWorker && window.EventSource) {
      try {
        worker = new SharedWorker("/static/app.js", { name: `farmhand live events of ${body.dataset.user || ""}` });
      } catch {
        worker = null;
      }
    }
    if (worker) {
      let heard = false;
      // A worker that cannot start (blocked, say): this tab streams on its own.
      worker.addEventListener("error", () => { if (!heard) { heard = true; ownStream(); } });
      const port = worker.port;
      port.onmessage = ({ data }) => { heard = true; emit(data); };
      const say = () => port.postMessage({ type: "visible", visible: visible() });
      document.addEventListener("visibilitychange", say);
      window.addEventListener("pageshow", say);
      window.addEventListener("pagehide", () => port.postMessage({ type: "bye" }));
      say();
    } else if (window.EventSource) {
      ownStream();
    } else {
      last = { type: "state", state: "none" };
    }
    liveEvents.hub = { listen: (fn) => { listeners.add(fn); fn(last); } };
    return liveEvents.hub;
  }

  // Calls refresh() now, on every (re)connect, and after events that `wants` accepts,
  // coalescing bursts: at most one refresh per `gap` ms, and never two at once. A hidden
  // tab keeps what it was asked for until it is shown again: ten background tabs of a
  // busy farm do not each refetch on every event.
  // The function returned schedules a refresh; its `pause()` stops them (a job being
  // deleted must not be fetched again) once the one under way, if any, has ended, and
  // `resume()` starts them again.
  function live(refresh, wants = () => true, gap = 300) {
    const indicator = $("#live");
    let timer = null, running = null, again = false, last = 0, paused = false, missed = false;
    const run = async () => {
      timer = null;
      if (paused) return;
      if (running) { again = true; return; }
      last = Date.now();
      running = (async () => { try { await refresh(); } catch (error) { fail(error); } })();
      await running;
      running = null;
      if (again) { again = false; schedule(); }
    };
    const schedule = () => {
      if (paused || timer) return;
      if (document.visibilityState === "hidden") { missed = true; return; }
      timer = setTimeout(run, Math.max(0, gap - (Date.now() - last)));
    };
    schedule.pause = async () => { paused = true; clearTimeout(timer); timer = null; await running; };
    schedule.resume = () => { paused = false; schedule(); };
    document.addEventListener("visibilitychange", () => {
      if (missed && document.visibilityState === "visible") { missed = false; schedule(); }
    });
    const words = { live: "live", reconnecting: "reconnecting…", closed: "offline — reload", none: "no live updates" };
    const state = (name) => {
      if (!indicator) return;
      // "connecting…" (and "idle": closed while every tab was hidden) only once the
      // indicator has said something: no flash of it on every page load.
      if (!words[name] && indicator.hidden) return;
      indicator.hidden = false;
      indicator.dataset.state = name === "none" ? "closed" : words[name] ? name : "idle";
      indicator.textContent = words[name] || "connecting…";
    };
    run();
    liveEvents().listen((message) => {
      if (message.type === "state") state(message.state);
      else if (message.type === "open") schedule();
      else if (message.type === "event") {
        let event;
        try { event = JSON.parse(message.data); } catch { return; }
        if (wants(event)) schedule();
      }
    });
    return schedule;
  }

  // ---------------------------------------------------------------- jobs page

  function jobsPage() {
    const tbody = $("#jobs tbody");
    const statusFilter = $("#filter-status"), ownerFilter = $("#filter-owner");
    const count = $("#jobs-count"), more = $("#jobs-more");
    // A farm may hold thousands of jobs: the manager filters them (`status`, `owner`)
    // and sends PAGE rows at a time; "Show more" asks for the next PAGE as well.
    const PAGE = 200, MOST = 1000; // MOST: the largest page the API answers
    const params = new URLSearchParams(location.search);
    statusFilter.value = params.get("status") || "";
    // People see only their own jobs: an owner filter is for admins, who may list users.
    ownerFilter.closest(".field").hidden = !isAdmin;
    let owner = isAdmin ? params.get("owner") || "" : "";
    let jobs = [], total = 0, wanted = PAGE, asked = 0, loaded = false;
    let focusFrom = null; // after "Show more": the index of the first job it added

    const showOwners = (names) => {
      const all = [...new Set([...names, ...(owner ? [owner] : [])])].sort();
      morph(ownerFilter, '<option value="">Everyone</option>' + all.map((o) => `<option>${esc(o)}</option>`).join(""));
      ownerFilter.value = owner;
    };
    if (isAdmin) {
      showOwners([]);
      api("GET", "/api/admin/users").then((users) => showOwners(users.map((u) => u.name))).catch(fail);
    }

    // An admin's list holds everyone's jobs: where the Owner column is left out (below
    // 900 px, and the phone's cards) the owner goes under the job's name instead, so it
    // is always clear whose job it is. A user's list holds only their own jobs.
    const byOwner = (j) => isAdmin ? `<span class="job-owner muted small">by <span class="breakable">${breakable(j.owner)}</span></span>` : "";

    const render = () => {
      if (!loaded) return;
      const filtered = Boolean(statusFilter.value || owner);
      count.textContent = total ? `${jobs.length.toLocaleString()} of ${total.toLocaleString()} ${total === 1 ? "job" : "jobs"}` : "";
      more.hidden = jobs.length >= total;
      if (!jobs.length) {
        morph(tbody, `<tr><td colspan="9" class="empty">${filtered ? "No job matches the filters." : 'No jobs yet. <a href="/submit">Submit one</a>.'}</td></tr>`);
        return;
      }
      morph(tbody, jobs.map((j) => {
        const end = j.finished_at ? Date.parse(j.finished_at) : Date.now();
        const elapsed = j.started_at ? (end - Date.parse(j.started_at)) / 1000 : null;
        const eta = j.status === "completed" ? 0 : j.eta_seconds;
        const workers = j.workers || [];
        return `<tr data-job-id="${j.id}">
          <td class="wrap"><a class="breakable" href="/jobs/${j.id}">${breakable(j.name)}</a> <span class="muted small">#${j.id}</span>${byOwner(j)}</td>
          <td class="hide-sm text">${esc(j.owner)}</td><td>${badge(j.status)}</td>
          <td>${bar(j.progress, j.status)} <span class="visually-hidden">${Math.round(j.progress)} %</span></td>
          <td class="num" data-label="Frames">${j.frames_done}/${j.frames_total}</td><td class="num hide-sm">${j.priority}</td>
          <td class="hide-sm text breakable">${workers.map(breakable).join(", ") || '<span class="muted">–</span>'}</td>
          <td class="num" data-label="Elapsed">${duration(elapsed)}</td><td class="num" data-label="Remaining">${["canceled", "failed"].includes(j.status) ? "–" : duration(eta)}</td></tr>`;
      }).join(""));
      paintBars(tbody);
      if (focusFrom !== null && jobs.length > focusFrom) {
        $$("#jobs tbody a")[focusFrom].focus();
        focusFrom = null;
      }
    };

    // The jobs the filters ask for, the first `wanted` of them (in pages of at most
    // MOST); an answer overtaken by a later request (the filters changed) is dropped.
    const refresh = async () => {
      const mine = ++asked;
      const query = new URLSearchParams();
      if (statusFilter.value) query.set("status", statusFilter.value);
      if (owner) query.set("owner", owner);
      const got = [];
      let all = 0;
      for (let offset = 0; offset < wanted; offset += MOST) {
        query.set("offset", String(offset));
        query.set("limit", String(Math.min(MOST, wanted - offset)));
        const page = await apiPage(`/api/jobs?${query}`);
        got.push(...page.items);
        all = page.total;
        if (got.length >= all) break;
      }
      if (mine !== asked) return;
      jobs = got;
      total = all;
      loaded = true;
      render();
    };
    live(refresh, (e) => e.kind !== "runner", 400);
    const sync = () => {
      owner = isAdmin ? ownerFilter.value : "";
      const query = new URLSearchParams();
      if (statusFilter.value) query.set("status", statusFilter.value);
      if (owner) query.set("owner", owner);
      history.replaceState(null, "", query.toString() ? "?" + query : location.pathname);
      wanted = PAGE;
      focusFrom = null;
      refresh().catch(fail);
    };
    statusFilter.addEventListener("change", sync);
    ownerFilter.addEventListener("change", sync);
    // The keyboard goes on to the first job shown anew (the button is gone at the end),
    // once a render shows it: a live refresh may overtake the click's own, which then
    // returns with nothing new drawn.
    more.addEventListener("click", async () => {
      const before = jobs.length;
      wanted = before + PAGE;
      focusFrom = before;
      more.disabled = true;
      try { await refresh(); } catch (error) { fail(error); } finally { more.disabled = false; }
    });
    setInterval(render, 1000 * 5);
  }

  // -------------------------------------------------------------- submit page

  function submitPage() {
    const drop = $("#dropzone"), input = $("#file"), form = $("#submit-form");
    const notice = $("#blend-notice");
    let blob = null; // {files: {path: sha256}, main_file}

    const showNotice = (text, kind) => {
      notice.hidden = !text;
      notice.className = "notice " + (kind || "");
      notice.textContent = text || "";
    };
    const field = (name) => form.elements.namedItem(name);

    // A file saved by a newer Blender than any on the farm (major.minor, as the
    // scheduler compares) does not open in them: its job would wait for a worker.
    const minor = (v) => String(v).split(".").slice(0, 2).map((part) => parseInt(part, 10) || 0);
    const newer = (a, b) => { const [x, y] = [minor(a), minor(b)]; return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1]); };
    function savedTooNew(info) {
      if (!info.saved_with) return "";
      const have = info.farm_blenders && info.farm_blenders.length ? info.farm_blenders : [info.blender_version];
      if (!have.every((v) => newer(info.saved_with, v))) return "";
      const newest = have[have.length - 1]; // farm_blenders are oldest first
      return `Warning: this file was saved with Blender ${info.saved_with}, newer than any Blender on this farm ` +
        `(the newest is ${newest}). Older Blenders cannot render it: the job will wait for a worker with Blender ${info.saved_with} or newer.`;
    }

    function fill(info, fileName) {
      const stem = fileName.replace(/^.*\//, "").replace(/\.(blend|zip)$/i, "");
      field("name").value = stem;
      field("frame_start").value = info ? info.frame_start : 1;
      field("frame_end").value = info ? info.frame_end : 1;
      field("frame_step").value = info ? info.frame_step || 1 : 1;
      field("resolution_percentage").value = info ? info.resolution_percentage : "";
      field("samples").value = info && info.samples ? info.samples : "";
      const format = info && ["PNG", "JPEG", "OPEN_EXR"].includes(info.output_format) ? info.output_format : "";
      field("output_format").value = format;
      const frames = info ? Math.floor((info.frame_end - info.frame_start) / (info.frame_step || 1)) + 1 : 1;
      field("chunk_size").value = Math.max(1, Math.ceil(frames / 50));
      field("video_fps").placeholder = info && info.fps ? `the scene's (${info.fps})` : "the scene's";
      $("#scene-facts").textContent = info
        ? `Scene “${info.scene}”: ${info.resolution_x}×${info.resolution_y} at ${info.resolution_percentage} %, ${info.engine}` +
          `${info.samples ? `, ${info.samples} samples` : ""}, frames ${info.frame_start}–${info.frame_end}` +
          `${info.frame_step > 1 ? ` every ${info.frame_step}` : ""}, ${info.output_format}` +
          `${info.rendered_format && info.rendered_format !== info.output_format ? ` (rendered as ${info.rendered_format}: the farm does not collect ${info.output_format})` : ""}` +
          ` (${info.saved_with ? `saved with Blender ${info.saved_with}, ` : ""}read with Blender ${info.blender_version})` +
          `${info.has_camera ? "" : " — warning: the scene has no camera"}`
        : "";
      const tooNew = info && savedTooNew(info);
      if (tooNew) showNotice(tooNew, "");
      form.hidden = false;
      field("name").focus();
    }

    function chooseMain(blendFiles, main) {
      const select = field("main_file");
      select.innerHTML = "";
      for (const path of blendFiles) select.add(new Option(path, path, path === main, path === main));
      $("#main-file-field").hidden = blendFiles.length < 2;
    }

    // "Try again" sends the same file once more, after an answer that was no fault of
    // the file: the manager busy (a 503; the button waits for its Retry-After), its
    // storage full, the network. (The file input is emptied once read, so choosing the
    // same file again works too.) Pressed, it goes while the file is sent: the focus
    // moves to the status line (a live region, submit.html) rather than to the page's
    // body, so a keyboard or screen-reader user hears what happens next and is where
    // "Try again" comes back (next in Tab order) if the manager is still busy.
    const again = document.createElement("button");
    again.type = "button";
    again.id = "upload-again";
    again.className = "small";
    again.textContent = "Try again";
    again.hidden = true;
    $("#upload-text").after(again);
    let againFile = null, againTimer = null;
    again.addEventListener("click", () => {
      if (!againFile) return;
      upload(againFile);
      $("#upload-text").focus();
    });
    const UPLOAD_WAIT = 30; // s, when a 503 says not how long
    const busyLine = (wait) => "The manager is busy and did not take the file (nothing is wrong with it). " +
      (wait ? `Try again in ${wait} s.` : "Try again now.");

    // The manager refuses an upload it cannot take (over the sender's quota, or its upload
    // limit) as soon as it knows, before the rest of the body: its 413 and then it closes
    // the connection. A browser still sending may see only that close (a reset), not the
    // answer before it: XHR's network error. If the manager answers the page now, it was
    // no network fault: the page says the manager refused the file, rather than blame the
    // network. A signed-out page is one too (`call` goes to the sign-in).
    const CUT_OFF = "Failed: the manager refused the upload. It closed the connection before the whole file was sent, " +
      "as it does for a file over your storage quota or its upload limit, and its reason did not reach the browser. " +
      "Try again to see it.";
    const NETWORK = "Upload failed: network error. Try again.";
    const whyCutOff = async () => {
      try {
        await call("GET", "/api/auth/me");
        return CUT_OFF;
      } catch (error) {
        if (!(error instanceof ApiError)) return NETWORK; // no answer now either
        return error.status === 401 ? null : CUT_OFF; // 401: `call` went to the sign-in
      }
    };

    // The upload under way, if any: a file chosen after it replaces it.
    let sending = null;
    function upload(file) {
      // Whatever was chosen before goes: its upload, status line, form and notices.
      if (sending) { sending.abort(); sending = null; }
      clearTimeout(againTimer);
      again.hidden = true;
      blob = null;
      form.hidden = true;
      showNotice("");
      $("#upload").hidden = true;
      const isZip = /\.zip$/i.test(file.name);
      if (!isZip && !/\.blend$/i.test(file.name)) { showNotice(`${file.name} is neither a .blend nor a .zip file.`, "error"); return; }
      $("#upload").hidden = false;
      // Whole, breaking only where `breakable` marks (after . _ - and every dozen
      // characters of a longer run), and on a line of its own when the status beside it
      // leaves it too little room (app.css), never mid-word as "big.blen" / "d".
      $("#upload-name").innerHTML = breakable(file.name);
      const progress = $("#upload-bar"), text = $("#upload-text");
      setBar(progress, 0);
      progress.removeAttribute("aria-valuetext");
      text.classList.remove("error");
      // The status line says why it failed, in red, beside a bar that is red at once across
      // its width (app.css: no slide from where the upload stopped, which looked like an
      // upload still under way). `retry`: the same file may do once the manager can take
      // it: "Try again" is offered.
      const failed = (why, retry = false) => {
        setBar(progress, 100, "failed");
        progress.setAttribute("aria-valuetext", "failed");
        text.classList.add("error");
        text.textContent = why;
        if (retry) { againFile = file; again.disabled = false; again.hidden = false; }
      };
      // A busy manager is no failure of the file: said plainly (not in red, the bar
      // empty), and "Try again" waits for the Retry-After.
      const busy = (wait, why) => {
        setBar(progress, 0);
        text.textContent = busyLine(wait);
        text.title = why;
        againFile = file;
        again.disabled = true;
        again.hidden = false;
        againTimer = setTimeout(() => { again.disabled = false; text.textContent = busyLine(0); }, wait * 1000);
      };
      text.title = "";
      const xhr = new XMLHttpRequest();
      sending = xhr;
      xhr.open("POST", isZip ? "/api/projects" : "/api/blend-info");
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        const pct = (100 * e.loaded) / e.total;
        setBar(progress, pct);
        text.textContent = `${Math.round(pct)} % of ${(e.total / 1024 ** 2).toFixed(1)} MB`;
      };
      let sent = false; // the whole body: a close after it is no refusal of it
      xhr.upload.onload = () => { sent = true; setBar(progress, 100); text.textContent = "Uploaded; reading the scene with Blender…"; };
      xhr.onerror = async () => {
        // `sending` stays this upload while the manager is asked: another file chosen
        // meanwhile replaces it, and then this one says nothing more.
        const why = sent ? NETWORK : await whyCutOff();
        if (sending !== xhr) return;
        sending = null;
        if (why) failed(why, true);
      };
      xhr.onload = () => {
        sending = null;
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        const sha = xhr.getResponseHeader("X-Blob-Sha256");
        if (xhr.status === 200 && isZip) {
          blob = { files: data.files, main_file: data.main_file };
          chooseMain(data.blend_files, data.main_file);
          text.textContent = `Uploaded: ${plural(Object.keys(data.files).length, "file")}.`;
          if (data.info) fill(data.info, file.name);
          else { showNotice(`${data.info_error}. Fill in the settings by hand.`, ""); fill(null, file.name); }
        } else if (xhr.status === 200) {
          blob = { files: { [data.file_name]: data.sha256 }, main_file: data.file_name };
          chooseMain([data.file_name], data.file_name);
          text.textContent = "Uploaded and read.";
          fill(data, file.name);
        } else if ((xhr.status === 503 || xhr.status === 422) && sha) {
          blob = { files: { [file.name]: sha }, main_file: file.name };
          chooseMain([file.name], file.name);
          text.textContent = "Uploaded.";
          // The manager's detail may say "by hand" itself: not twice.
          const why = (data && data.detail) || "The file's settings could not be read";
          showNotice(/by hand\.?$/.test(why) ? sentence(why) : `${why}. Fill in the settings by hand.`, "");
          fill(null, file.name);
        } else if (xhr.status === 401) {
          sessionEnded("/submit");
        } else {
          // What the answer says, and what to do: another file only when this one is at
          // fault (400); a 413 says itself what is too large (the file, or the quota and
          // what frees room); a stale page's 403 wants a reload; after a full disk's 507
          // (an administrator frees space) and other faults of the manager's the same
          // file may do.
          const detail = data && typeof data.detail === "string" ? data.detail : `the manager answered ${xhr.status}`;
          if (xhr.status === 503) busy(retryAfter(xhr.getResponseHeader("Retry-After"), UPLOAD_WAIT), detail);
          else if (xhr.status === 400) failed(`Failed: ${sentence(detail)} Choose another file.`);
          else if (xhr.status === 403) failed(`Failed: ${sentence(detail)} Reload the page and choose the file again.`);
          else if (xhr.status === 413) failed(`Failed: ${sentence(detail)}`);
          else failed(`Failed: ${sentence(detail)}`, true);
        }
      };
      const data = new FormData();
      data.append("file", file, file.name);
      xhr.send(data);
    }

    drop.addEventListener("click", () => input.click());
    // Emptied once read: choosing the same file again (after a refusal) is a change too.
    input.addEventListener("change", () => {
      const file = input.files[0];
      input.value = "";
      if (file) upload(file);
    });
    for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
    for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) upload(file);
    });
    // A file dropped anywhere on the page should not navigate away from it.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => { e.preventDefault(); if (e.target.closest && !e.target.closest("#dropzone") && e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]); });

    // Frames in tiles: each frame of the range is its own tiles and merge, so a task is
    // one tile of one frame and "frames per task" does not apply: it is greyed out while
    // more than one tile is asked for (the range and step stay).
    const tiled = () => (Number(field("tile_columns").value) || 1) * (Number(field("tile_rows").value) || 1) > 1;
    const showTiling = () => { field("chunk_size").disabled = tiled(); };
    for (const name of ["tile_columns", "tile_rows"]) field(name).addEventListener("input", showTiling);

    // A video of the frames: the containers offered are those that hold the codec, and
    // the quality's (crf) limit is the codec's; both come with the page, from the
    // schemas (VIDEO_CONTAINERS, MAX_CRF). Unticked, the fields are hidden and disabled:
    // nothing in them is sent or blocks the form.
    const videoFields = $("#video-fields");
    const containers = JSON.parse(videoFields.dataset.containers), maxCrf = JSON.parse(videoFields.dataset.maxCrf);
    const showVideo = () => { videoFields.hidden = videoFields.disabled = !field("make_video").checked; };
    function offerContainers() {
      const codec = field("video_codec").value, select = field("video_container"), was = select.value;
      const allowed = containers[codec] || [];
      select.innerHTML = "";
      for (const [value, label] of allowed) select.add(new Option(label, value));
      select.value = allowed.some(([value]) => value === was) ? was : (allowed[0] || [""])[0];
      field("video_crf").max = maxCrf[codec];
      $("#crf-max").textContent = maxCrf[codec];
    }
    field("make_video").addEventListener("change", showVideo);
    field("video_codec").addEventListener("change", offerContainers);
    showVideo();
    offerContainers();

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!blob) return;
      const number = (name) => (field(name).value === "" ? null : Number(field(name).value));
      const job = {
        name: field("name").value.trim(),
        frame_start: number("frame_start"), frame_end: number("frame_end"), frame_step: number("frame_step"),
        chunk_size: number("chunk_size"), priority: number("priority"),
        resolution_percentage: number("resolution_percentage"), samples: number("samples"),
        output_format: field("output_format").value || null,
        main_file: field("main_file").value || blob.main_file, files: blob.files,
      };
      if (body.dataset.hasTags && field("required_tags")) job.required_tags = field("required_tags").value.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean);
      if (field("device").value) job.device = field("device").value;
      if (number("max_workers") !== null) job.max_workers = number("max_workers");
      if (field("make_video").checked) {
        // The manager checks the pair and the limits; a refusal shows its reason.
        job.video = {
          codec: field("video_codec").value, container: field("video_container").value,
          fps: number("video_fps"), crf: number("video_crf"),
        };
      }
      const columns = number("tile_columns") || 1, rows = number("tile_rows") || 1;
      if (tiled()) {
        // The range in tiles; the manager checks the rest (at most so many tasks).
        job.tiles = { columns, rows };
      }
      const button = $("#submit-button");
      button.disabled = true;
      $("#submit-status").textContent = "Submitting…";
      try {
        const accepted = await api("POST", "/api/jobs", job);
        location.href = `/jobs/${accepted.id}`;
      } catch (error) {
        button.disabled = false;
        $("#submit-status").textContent = "";
        fail(error);
      }
    });
  }

  // ----------------------------------------------------------------- job page

  // `tile 3 of 4`: counted left to right, top to bottom, as the tasks are (TileSpec.label).
  const tileLabel = (tile) => `tile ${tile.row * tile.columns + tile.column + 1} of ${tile.columns * tile.rows}`;

  // A task's frames as `farmhand submit --frames` takes them, so what the page shows can be
  // typed back: `7`, `1-10`, `1-10x3` (every 3rd); frames with no single step as `1,2,5`.
  // The CLI's `frames_label` (farmhand/cli/words.py) writes them the same way.
  function frameSpan(frames) {
    if (frames.length < 2) return frames.length ? `${frames[0]}` : "-";
    const step = frames[1] - frames[0];
    if (step < 1 || frames.some((f, i) => i > 0 && f - frames[i - 1] !== step)) return frames.join(",");
    const span = `${frames[0]}-${frames[frames.length - 1]}`;
    return step === 1 ? span : `${span}x${step}`;
  }

  // What a task delivers, for its row: frames with how many are done, a tile of a still,
  // the merge of the tiles, or the video (those hold no frames of their own).
  function taskWork(t) {
    const count = (done, all) => ` <span class="muted small">(${done}/${all})</span>`;
    if (t.tile) return `${t.tile.frame} <span class="muted small">${tileLabel(t.tile)}</span>`;
    if (!t.frames.length) return `<span class="muted">${esc(t.type)}</span>`;
    const span = frameSpan(t.frames);
    if (t.type !== "render") return `${span} <span class="muted small">${esc(t.type)}</span>`;
    return span + count(t.frames_done, t.frames.length);
  }

  function jobPage() {
    const jobId = Number(body.dataset.jobId);
    const base = `/api/jobs/${jobId}`;
    const openLogs = new Map(); // task id -> <pre>
    // The job's blocklist: admins only (the section is in the page only for them).
    const blockSection = $("#blocklist-section");
    let job = null, outputs = [], frames = [], blocklist = [], fetchedAt = 0;
    // A job may have 10,000 tasks: the page fetches the job without them and shows one
    // page of TASK_PAGE tasks (`tasks`, of `taskTotal` matching the filter), in index
    // order; `active` are the tasks rendering now, `unfinished` the queued, failed and
    // canceled ones when the frames grid needs them (see refresh), `failing` how many
    // failed or were canceled (for "Requeue failed").
    const TASK_PAGE = 200, MOST = 1000;
    const TASK_FILTERS = { active: ["active"], failed: ["failed", "canceled"], queued: ["queued"], completed: ["completed"] };
    const taskFilter = $("#task-filter");
    let tasks = [], taskTotal = 0, taskOffset = 0, active = [], activeTotal = 0, unfinished = [], failing = 0;

    const thumbUrl = (f) => `${base}/files/${f.id}/thumbnail?v=${f.sha256.slice(0, 12)}`;
    const fileUrl = (f) => `${base}/files/${f.id}/download`;
    // Browsers show PNG, JPEG, WebP and BMP; for the rest the farm keeps (OpenEXR, TIFF) the
    // manager's JPEG preview stands in.
    const needsPreview = (f) => !/\.(png|jpe?g|webp|bmp)$/i.test(f.path);
    // Thumbnails come through `showImage` (a busy manager's 503 is asked again) once
    // their tile is near the part of the grid in view, as loading="lazy" had them: the
    // grid scrolls, and a job may have 10,000 frames. A tile replaced or removed is no
    // longer watched.
    const nearGrid = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        nearGrid.unobserve(entry.target);
        const img = $("img", entry.target);
        showImage(img, img.dataset.src);
      }
    }, { root: $("#thumbs"), rootMargin: "300px 0px" });

    // What the job was submitted without (`--allow-missing`): its frames show those
    // files magenta, and "completed" alone would pass them for a full render. Text only.
    function renderMissing(after) {
      let note = $("#job-missing");
      if (!note) {
        note = document.createElement("p");
        note.id = "job-missing";
        note.className = "notice";
        after.after(note);
      }
      const names = job.missing_files || [];
      const shown = names.slice(0, 5);
      const more = job.missing_count - shown.length;
      const what = job.missing_count === 1 ? "1 missing file" : `${job.missing_count} missing files`;
      const list = shown.length ? `: ${shown.join(", ")}${more > 0 ? ` and ${more} more` : ""}` : "";
      note.hidden = !job.missing_count;
      note.textContent = job.missing_count ? `Submitted without ${what}${list}` : "";
    }

    function renderHeader() {
      $("#job-name").textContent = job.name;
      // What the job asked for beyond its frames, in words (`settings_line`, made by
      // the manager as `farmhand job` shows it). Text only: tags come from people.
      $("#job-settings").textContent = job.settings_line || "";
      $("#job-settings").hidden = !job.settings_line;
      $("#job-status").innerHTML = badge(job.status);
      document.title = `${job.name} · farmhand`;
      setBar($("#job-progress"), job.progress, job.status);
      $("#stat-progress").textContent = `${Math.round(job.progress)} %`;
      $("#stat-frames").textContent = `${job.frames_done}/${job.frames_total}`;
      renderTimes();
      $("#stat-per-frame").textContent = perFrame(job.seconds_per_frame);
      $("#stat-memory").textContent = memory(job.peak_memory_bytes);
      $("#stat-blender").textContent = job.blender_saved || "unknown";
      // The series every render task runs on, once the first render claimed it (null before).
      $("#stat-pinned-box").hidden = !job.blender_pinned;
      $("#stat-pinned").textContent = job.blender_pinned || "–";
      $("#stat-owner").textContent = job.owner;
      $("#stat-priority").textContent = job.priority;
      const prio = $("#priority-input");
      if (document.activeElement !== prio) prio.value = job.priority;
      const reason = $("#job-reason");
      reason.hidden = !job.status_reason || job.status === "completed";
      // Why a job waits (no runner has its tags…) is news, not an error; why it failed is.
      reason.className = "notice" + (job.status === "failed" ? " error" : "");
      reason.textContent = job.status_reason || "";
      renderMissing(reason);
      const finished = ["completed", "failed", "canceled"].includes(job.status);
      const show = {
        pause: ["queued", "active"].includes(job.status), resume: job.status === "paused",
        cancel: !finished, "requeue-failed": failing > 0,
        "requeue-all": finished, priority: !finished, delete: true,
      };
      for (const button of $$("#actions [data-action]")) button.hidden = !show[button.dataset.action];
      // The bar stays hidden until the job is known: a click before that had no job to act on.
      $("#actions").hidden = false;
      $(".prio").hidden = finished;
      const video = outputs.find((f) => /\.(mp4|mov|mkv|webm)$/i.test(f.path));
      morph($("#video-link"), video ? `<a class="button" href="${fileUrl(video)}" download>Download video</a>` : "");
      $("#download-zip").hidden = !outputs.some((f) => f.frame !== null);
    }

    // Elapsed and remaining as the manager gave them, moved on by the time since: they
    // tick every second while the job is active, between events.
    function renderTimes() {
      const gone = job.status === "active" ? (Date.now() - fetchedAt) / 1000 : 0;
      const eta = job.eta_seconds === null || job.eta_seconds === undefined ? null : Math.max(0, job.eta_seconds - gone);
      $("#stat-elapsed").textContent = duration(job.elapsed_seconds === null || job.elapsed_seconds === undefined ? null : job.elapsed_seconds + gone);
      $("#stat-eta").textContent = ["canceled", "failed"].includes(job.status) ? "–" : duration(eta);
    }

    function renderThumbs() {
      const grid = $("#thumbs");
      const byFrame = new Map(outputs.filter((f) => f.frame !== null).map((f) => [f.frame, f]));
      // A task's frames past its frames_done are not done yet.
      const left = (list) => list.flatMap((t) => t.frames.slice(t.frames_done));
      const rendering = new Set(left(active));
      // Done as the Frames figure counts them (the API's frames_done): a requeued task's
      // frames are not, though their earlier files stay stored (and shown, marked as
      // such) until the new render replaces them. Only frames with a file need telling
      // apart, so only the tasks that have not completed are asked for (refresh).
      const notDone = new Set([...rendering, ...left(unfinished), ...left(tasks.filter((t) => t.status !== "completed"))]);
      const done = { has: (frame) => !notDone.has(frame) };
      const { frame_start: first, frame_end: last, frame_step: step } = job.settings;
      frames = [];
      for (let frame = first; frame <= last; frame += step) frames.push(frame);
      const redo = [...byFrame.keys()].filter((frame) => !done.has(frame)).length;
      $("#frames-count").textContent = `${job.frames_done} of ${job.frames_total} done` +
        (redo ? ` · ${plural(redo, "frame")} shown from an earlier render, to be rendered again` : "");
      const existing = new Map($$(".thumb", grid).map((el) => [Number(el.dataset.frame), el]));
      frames.forEach((frame, index) => {
        const file = byFrame.get(frame);
        const state = rendering.has(frame) ? "rendering" : done.has(frame) || !file ? "" : "again";
        const key = (file ? `f${file.id}-${file.sha256}` : "none") + (state ? `-${state}` : "");
        let el = existing.get(frame);
        if (!el || el.dataset.key !== key) {
          const fresh = document.createElement(file ? "button" : "div");
          fresh.className = "thumb" + (file ? (state ? " old" : "") : " pending") + (state === "rendering" ? " rendering" : "");
          fresh.dataset.frame = frame;
          fresh.dataset.key = key;
          const note = state === "rendering" ? (file ? "rendering again" : "rendering") : state === "again" ? "to render again" : "";
          if (file) {
            fresh.type = "button";
            fresh.setAttribute("aria-label", `Open frame ${frame}${note ? ` (earlier render, ${note})` : ""}`);
            fresh.innerHTML = `<img data-src="${thumbUrl(file)}" data-state="loading" alt="Frame ${frame}"><span class="label">${frame}${note ? ` · ${note}` : ""}</span>`;
            nearGrid.observe(fresh);
            fresh.addEventListener("click", () => openFrame(frame));
          } else {
            fresh.textContent = note ? `${frame} · ${note}` : `${frame}`;
          }
          // The keyboard stays on this frame when its thumbnail is made anew.
          const focused = el && el === document.activeElement;
          if (el) { nearGrid.unobserve(el); el.replaceWith(fresh); } else grid.insertBefore(fresh, grid.children[index] || null);
          if (focused) {
            if (!file) fresh.tabIndex = -1;
            fresh.focus();
          }
          el = fresh;
        }
        existing.delete(frame);
      });
      existing.forEach((el) => { nearGrid.unobserve(el); el.remove(); });
      const latest = outputs.filter((f) => f.frame !== null).sort((a, b) => b.id - a.id)[0];
      const figure = $("#latest");
      // After a requeue the newest file may be a frame queued to render again: said so,
      // as its thumbnail says, until its new render arrives.
      const earlier = latest && !done.has(latest.frame) ? " · an earlier render, to be rendered again" : "";
      if (latest && figure.dataset.file !== `${latest.id}${earlier ? "-old" : ""}`) {
        figure.dataset.file = `${latest.id}${earlier ? "-old" : ""}`;
        figure.innerHTML = `<a href="${fileUrl(latest)}" aria-label="Open frame ${latest.frame}"><img alt="Frame ${latest.frame}, the last rendered"></a><figcaption>Frame ${latest.frame} · ${esc(latest.path)}${earlier}</figcaption>`;
        if (needsPreview(latest)) showImage($("img", figure), thumbUrl(latest));
        else showPlainImage($("img", figure), fileUrl(latest));
        $("a", figure).addEventListener("click", (e) => { e.preventDefault(); openFrame(latest.frame); });
      }
    }

    // What a person may do to one task: render it again once it has ended, or stop it
    // while it waits or runs (cancel_task in scheduling/state.py stops only a queued or
    // active task; tasks are never paused, only jobs). The job's owner and admins may
    // (the API decides in the end).
    const mayControl = () => isAdmin || job.owner === body.dataset.user;
    const taskAction = (t) =>
      ["failed", "canceled", "completed"].includes(t.status) ? ["requeue", "Requeue"]
        : ["queued", "active"].includes(t.status) ? ["cancel", "Cancel"] : null;
    function taskButton(t) {
      const act = taskAction(t);
      if (!act) return "";
      const [action, label] = act;
      return `<button type="button" class="small" data-task-action="${action}" data-task="${t.id}" aria-label="${label} task ${t.index}">${label}</button>`;
    }

    // The filter's counts, and where this page is among the tasks it shows.
    function renderPager() {
      const named = { active: `Active (${activeTotal.toLocaleString()})`, failed: `Failed or canceled (${failing.toLocaleString()})` };
      for (const option of taskFilter.options) if (named[option.value]) option.textContent = named[option.value];
      const pager = $("#task-pager");
      pager.hidden = taskTotal <= TASK_PAGE && taskOffset === 0;
      const end = Math.min(taskOffset + tasks.length, taskTotal);
      $("#tasks-range").textContent = taskTotal ? `${(taskOffset + 1).toLocaleString()}–${end.toLocaleString()} of ${taskTotal.toLocaleString()}` : "none";
      $("#tasks-count").textContent = taskFilter.value ? "" : `${taskTotal.toLocaleString()} ${taskTotal === 1 ? "task" : "tasks"}`;
      for (const id of ["tasks-first", "tasks-prev"]) $(`#${id}`).disabled = taskOffset === 0;
      for (const id of ["tasks-next", "tasks-last"]) $(`#${id}`).disabled = end >= taskTotal;
    }

    function renderTasks() {
      const tbody = $("#tasks tbody");
      const control = mayControl();
      $("#tasks th.task-act").hidden = !control;
      morph(tbody, tasks.map((t) => {
        // Only a running task's time counts up: a task given back to the queue keeps its
        // started_at from the hand-out before, and has not run since.
        const end = t.finished_at ? Date.parse(t.finished_at) : t.status === "active" ? Date.now() : null;
        const time = t.started_at && end !== null ? (end - Date.parse(t.started_at)) / 1000 : null;
        const span = taskWork(t);
        const open = openLogs.has(t.id);
        const now = t.status === "active" && t.frame !== null && t.frame !== undefined
          ? `frame ${t.frame}${t.sample ? ` · sample ${t.sample}${t.samples_total ? `/${t.samples_total}` : ""}` : ""}` : "–";
        const each = t.frames_done && t.render_seconds ? perFrame(t.render_seconds / t.frames_done) : "–";
        const eta = t.status === "active" || t.status === "queued" ? duration(t.eta_seconds) : "–";
        const peak = memory(t.peak_memory_bytes);
        // On a phone each task is a card (app.css, table.cards): labels instead of the
        // header, and no "–" for what a task does not have yet.
        const none = (text) => (text === "–" ? " none" : "");
        // Between a phone and a laptop (app.css) the `more` cells make a second line of
        // the row, each with its label, under the columns that keep their headings.
        const took = duration(time);
        // Failures are what the job's retry limit counts; hand-outs (`attempts`) also count
        // give-backs (a worker stopping) and runs before a person's requeue, so they are
        // added only when more than the failures and one run, as `farmhand job` does.
        const failures = t.attempts > t.failures + 1
          ? `${t.failures}<br> <span class="muted small">of ${t.attempts} hand-outs</span>` : `${t.failures}`;
        return `<tr data-task-id="${t.id}"><td class="num lead idx" data-label="Task">${t.index}</td><td class="lead frames" data-label="Frames">${span}</td>
          <td class="lead status">${badge(t.status)}</td><td class="text worker breakable${none(t.worker || "–")}" data-label="Worker">${breakable(t.worker || "–")}</td><td class="small now${none(now)}">${now}</td><td class="num hide-sm more${none(took)}" data-label="Time">${took}</td>
          <td class="num hide-sm more${none(each)}" data-label="Per frame">${each}</td><td class="num more${none(peak)}" data-memory data-label="Peak memory">${peak}</td><td class="num more${none(eta)}" data-label="Remaining">${eta}</td><td class="num hide-sm more failures" data-label="Failures">${failures}</td>
          <td class="wrap small line last more error" data-label="Last error">${esc(t.last_error || "")}</td>
          <td class="end log" data-label="Log"><button type="button" class="small" data-log="${t.id}" aria-expanded="${open}" aria-controls="log-${t.id}">${open ? "Hide" : "Show"}</button></td>
          ${control ? `<td class="task-act lead end">${taskButton(t)}</td>` : ""}</tr>` +
          // The log's text is part of the row (after a newline, which the parser drops
          // at a <pre>'s start): a refresh without new lines leaves it as it is, scrolled
          // and selected where someone put it.
          (open ? `<tr class="log-row" data-log-of="${t.id}"><td colspan="${control ? 13 : 12}"><pre class="log" id="log-${t.id}" tabindex="0" aria-label="Log of task ${t.index}">\n${esc(openLogs.get(t.id))}</pre></td></tr>` : "");
      }).join("") || `<tr><td colspan="${control ? 13 : 12}" class="empty">${taskFilter.value ? "No task is " + esc(taskFilter.selectedOptions[0].textContent.replace(/ \(.*/, "").toLowerCase()) + "." : "No tasks."}</td></tr>`);
    }

    async function loadLog(taskId) {
      const response = await fetch(`${base}/tasks/${taskId}/log`, { credentials: "same-origin" });
      const text = response.ok ? await response.text() : `(${response.status}: no log)`;
      // Hidden while it was fetched: it stays hidden (setting it would show it again).
      if (!openLogs.has(taskId)) return;
      const lines = text.split("\n");
      openLogs.set(taskId, (lines.length > 200 ? "…\n" : "") + lines.slice(-200).join("\n") || "(empty so far)");
      // New lines scroll the log to its end; the same ones leave it where someone put it.
      const pre = $(`#log-${taskId}`);
      if (pre && pre.textContent !== openLogs.get(taskId)) { pre.textContent = openLogs.get(taskId); pre.scrollTop = pre.scrollHeight; }
    }

    // Requeue or cancel one task. The row is rewritten with the task's new state (and
    // the other action): the keyboard stays on that row's action, not the page's top.
    async function runTaskAction(button) {
      const taskId = Number(button.dataset.task);
      const action = button.dataset.taskAction;
      const task = tasks.find((t) => t.id === taskId);
      if (!task) return;
      // What would throw work away asks first, as the job's Cancel does: canceling a
      // running render, and requeuing a task that finished (or got part way): its frames
      // are rendered again and replace the ones stored.
      if (action === "cancel" && task.status === "active" && !confirm(`Cancel task ${task.index}? Its render stops now.`)) return;
      if (action === "requeue" && (task.status === "completed" || task.frames_done > 0)
        && !confirm(`Requeue task ${task.index}? Its finished work is thrown away and rendered again.`)) return;
      button.disabled = true;
      try {
        await api("POST", `${base}/tasks/${taskId}/actions`, { action });
        await refresh();
        // The row may have been out of date (the task finished meanwhile): say what is.
        const after = tasks.find((t) => t.id === taskId);
        if (action === "cancel" && after && after.status !== "canceled") toast(`Task ${task.index} is ${after.status}: nothing to cancel.`);
        else toast(`Task ${task.index} ${action === "cancel" ? "canceled" : "queued to render again"}.`);
      } catch (error) {
        if (error.status === 404 || error.status === 405) toast("Task actions are not available on this manager yet.", "error");
        else fail(error);
      } finally {
        button.disabled = false;
        const active = document.activeElement;
        if (active === document.body || active === button || !active?.isConnected) {
          // A row the filter no longer shows (a failed task requeued): back to the filter.
          const row = $(`#tasks tr[data-task-id="${taskId}"]`);
          (row ? $("[data-task-action]", row) || $("button", row) : taskFilter)?.focus();
        }
      }
    }

    $("#tasks").addEventListener("click", async (e) => {
      const act = e.target.closest("[data-task-action]");
      if (act) { runTaskAction(act); return; }
      const button = e.target.closest("[data-log]");
      if (!button) return;
      const taskId = Number(button.dataset.log);
      if (openLogs.has(taskId)) openLogs.delete(taskId);
      else openLogs.set(taskId, "loading…");
      renderTasks();
      $(`[data-log="${taskId}"]`)?.focus();
      if (openLogs.has(taskId)) loadLog(taskId).catch(fail);
    });

    // Lightbox: the full frame, with previous/next and the arrow keys.
    const dialog = $("#lightbox");
    let current = null, opener = null;
    // Escape or Close: focus goes back to what opened the frame (a thumbnail), not the top.
    dialog.addEventListener("close", () => {
      const back = opener && opener.isConnected ? opener : $(`.thumb[data-frame="${current}"]`);
      if (back) back.focus();
      opener = null;
    });
    function openFrame(frame) {
      const done = outputs.filter((f) => f.frame !== null).sort((a, b) => a.frame - b.frame);
      const file = done.find((f) => f.frame === frame);
      if (!file) return;
      current = frame;
      $("#lightbox-title").textContent = `Frame ${frame}`;
      if (needsPreview(file)) showImage($("#lightbox-img"), `${thumbUrl(file)}&size=1600`);
      else showPlainImage($("#lightbox-img"), fileUrl(file));
      $("#lightbox-img").alt = `Frame ${frame}`;
      $("#lightbox-note").hidden = !needsPreview(file);
      $("#lightbox-download").href = fileUrl(file);
      const index = done.indexOf(file);
      $("#lightbox-prev").disabled = index <= 0;
      $("#lightbox-next").disabled = index >= done.length - 1;
      $("#lightbox-prev").dataset.frame = index > 0 ? done[index - 1].frame : "";
      $("#lightbox-next").dataset.frame = index < done.length - 1 ? done[index + 1].frame : "";
      if (!dialog.open) {
        opener = document.activeElement !== document.body ? document.activeElement : null;
        dialog.showModal();
        $("#lightbox-close").focus();
      }
    }
    const step = (which) => { const f = $(which).dataset.frame; if (f !== "") openFrame(Number(f)); };
    $("#lightbox-prev").addEventListener("click", () => step("#lightbox-prev"));
    $("#lightbox-next").addEventListener("click", () => step("#lightbox-next"));
    $("#lightbox-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
    dialog.addEventListener("keydown", (e) => {
      // Tab wraps around the dialog's controls instead of leaving it for the browser's.
      if (e.key === "Tab") {
        const stops = $$("button:not(:disabled), a[href]", dialog);
        const at = stops.indexOf(document.activeElement);
        const next = e.shiftKey ? (at <= 0 ? stops.length - 1 : -1) : at === stops.length - 1 || at < 0 ? 0 : -1;
        if (next >= 0 && stops.length) { e.preventDefault(); stops[next].focus(); }
      }
      if (e.key === "ArrowLeft") step("#lightbox-prev");
      if (e.key === "ArrowRight") step("#lightbox-next");
    });

    // Actions: cancel is DELETE /api/jobs/{id}; the others follow the jobs API as it grows.
    const actions = {
      pause: () => api("POST", `${base}/actions`, { action: "pause" }),
      resume: () => api("POST", `${base}/actions`, { action: "resume" }),
      "requeue-failed": () => api("POST", `${base}/actions`, { action: "requeue-failed" }),
      "requeue-all": () => api("POST", `${base}/actions`, { action: "requeue-all" }),
      cancel: () => confirm(`Cancel job “${job.name}”? Running frames stop now.`) && api("DELETE", base),
      priority: () => {
        // An empty box is "" (Number("") is 0): refused here, with what is wanted.
        const input = $("#priority-input"), raw = input.value.trim();
        if (!/^\d+$/.test(raw) || Number(raw) > 100) {
          input.setAttribute("aria-invalid", "true");
          toast("Priority must be a whole number from 0 to 100: nothing was changed.", "error");
          input.focus();
          return false;
        }
        input.removeAttribute("aria-invalid");
        return api("PATCH", base, { priority: Number(raw) });
      },
      delete: async () => {
        if (!confirm(`Delete job “${job.name}” and all its frames? This cannot be undone.`)) return false;
        // No live refresh may ask for the job while or after it goes (404s).
        await updates.pause();
        try {
          await api("DELETE", `${base}?purge=true`);
        } catch (error) {
          updates.resume();
          throw error;
        }
        location.href = "/";
        return false;
      },
    };
    // A requeue's answer counts the tasks it put back (JobActionOutcome.requeued): said,
    // so that a requeue that found nothing to run (a task finished meanwhile) is not "done".
    const actionDone = (what, answer) => {
      const n = answer && Number.isInteger(answer.requeued) ? answer.requeued : null;
      if (n === null) return `${what}: done`;
      if (n === 0) return `${what}: nothing to requeue`;
      return `${what}: ${n} task${n === 1 ? "" : "s"} back in the queue`;
    };
    $("#actions").addEventListener("click", async (e) => {
      const button = e.target.closest("[data-action]");
      if (!button) return;
      button.disabled = true;
      try {
        const done = await actions[button.dataset.action]();
        if (done) { toast(actionDone(button.textContent, done)); await refresh(); }
      } catch (error) {
        if (error.status === 404 || error.status === 405) toast(`${button.textContent} is not available on this manager yet.`, "error");
        else fail(error);
      } finally {
        button.disabled = false;
        // Pause hides itself and shows Resume: keep the keyboard in the action bar.
        if (button.isConnected && (document.activeElement === document.body || document.activeElement === button)) {
          (button.hidden ? $$("#actions button:not([hidden])")[0] : button)?.focus();
        }
      }
    });
    $("#priority-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); $('[data-action="priority"]').click(); }
    });

    // The blocklist section: built with the DOM (worker names and reasons come from
    // runners), shown only while the job has entries.
    function renderBlocklist() {
      if (!blockSection) return;
      const tbody = $("#blocklist tbody");
      blockSection.hidden = !blocklist.length;
      $("#blocklist-clear-all").hidden = blocklist.length < 2;
      const cell = (text, className) => {
        const td = document.createElement("td");
        if (className) td.className = className;
        td.textContent = text;
        return td;
      };
      morph(tbody, blocklist.map((entry) => {
        const row = document.createElement("tr");
        row.dataset.entryId = entry.id;
        row.dataset.worker = entry.worker;
        const since = cell("", "small");
        since.dataset.label = "Since";
        const time = document.createElement("time");
        time.dateTime = entry.created_at;
        time.textContent = when(entry.created_at);
        since.append(time);
        const clear = document.createElement("button");
        clear.type = "button";
        clear.className = "small";
        clear.dataset.clearEntry = entry.id;
        clear.textContent = "Clear";
        clear.setAttribute("aria-label", `Clear ${entry.worker}'s blocklist entry`);
        const actions = cell("", "clear");
        actions.append(clear);
        const type = cell(entry.task_type);
        type.dataset.label = "Task type";
        row.append(cell(entry.worker, "name"), type, cell(entry.reason, "wrap small"), since, actions);
        return row;
      }));
    }

    // Clearing lets the workers take the job's tasks again. The manager announces the
    // change (a job event), which refreshes every open copy of the page.
    async function clearBlocklist(entries, button) {
      const index = blocklist.indexOf(entries[0]);
      button.disabled = true;
      const results = await Promise.allSettled(entries.map((entry) => api("DELETE", `/api/admin/blocklist/${entry.id}`)));
      // Gone already (someone else cleared it): what was asked for is done.
      const problem = results.find((r) => r.status === "rejected" && r.reason.status !== 404);
      if (problem) fail(problem.reason);
      else if (entries.length === 1) toast(`${entries[0].worker} may take this job's tasks again.`, "ok");
      else toast(`Blocklist cleared: ${plural(entries.length, "entry", "entries")}.`, "ok");
      try { await refresh(); } catch (error) { fail(error); }
      button.disabled = false;
      if (document.activeElement !== document.body && document.activeElement?.isConnected) return;
      // The keyboard goes to the next entry's Clear, else (the section is gone) to the
      // job's actions: "Requeue failed" is often what comes next.
      const left = $$("#blocklist [data-clear-entry]");
      const next = blockSection.hidden ? $$("#actions button:not([hidden])")[0] : button.isConnected && !button.hidden ? button : left[Math.min(Math.max(index, 0), left.length - 1)];
      next?.focus();
    }
    if (blockSection) {
      $("#blocklist").addEventListener("click", (e) => {
        const button = e.target.closest("[data-clear-entry]");
        const entry = button && blocklist.find((b) => b.id === Number(button.dataset.clearEntry));
        if (entry) clearBlocklist([entry], button);
      });
      $("#blocklist-clear-all").addEventListener("click", (e) => {
        if (blocklist.length) clearBlocklist([...blocklist], e.currentTarget);
      });
    }

    async function refresh() {
      const shown = new URLSearchParams({ offset: String(taskOffset), limit: String(TASK_PAGE) });
      for (const status of TASK_FILTERS[taskFilter.value] || []) shown.append("status", status);
      const [detail, files, page, running, failed, blocked] = await Promise.all([
        api("GET", `${base}?tasks=false`), api("GET", `${base}/files`), apiPage(`${base}/tasks?${shown}`),
        // Rendering now: at most one task per worker.
        apiPage(`${base}/tasks?status=active&limit=${MOST}`),
        apiPage(`${base}/tasks?status=failed&status=canceled&limit=1`),
        blockSection ? api("GET", `/api/admin/blocklist?job_id=${jobId}`).catch(() => null) : null,
      ]);
      // The page shown is past the end now (its tasks were requeued out of the filter):
      // the last page there is.
      if (!page.items.length && taskOffset > 0) {
        taskOffset = Math.max(0, Math.floor((page.total - 1) / TASK_PAGE) * TASK_PAGE);
        return refresh();
      }
      job = detail;
      fetchedAt = Date.now();
      outputs = files.filter((f) => f.kind === "output");
      [tasks, taskTotal, active, activeTotal, failing] = [page.items, page.total, running.items, running.total, failed.total];
      // Stored frames the Frames figure does not count (a requeue): which they are is
      // in the tasks that have not completed, the queued, failed and canceled ones.
      const stored = new Set(outputs.filter((f) => f.frame !== null).map((f) => f.frame)).size;
      unfinished = stored > job.frames_done ? await api("GET", `${base}/tasks?status=queued&status=failed&status=canceled&limit=${MOST}`) : [];
      if (blocked) blocklist = blocked.filter((entry) => entry.job_id === jobId);
      // A log open on a task of another page stays closed when it comes back.
      for (const id of openLogs.keys()) if (!tasks.some((t) => t.id === id)) openLogs.delete(id);
      renderHeader();
      renderThumbs();
      renderPager();
      renderTasks();
      renderBlocklist();
      await Promise.all([...openLogs.keys()].map((id) => loadLog(id)));
    }

    // The task filter and pager: a filter starts at its first page.
    taskFilter.addEventListener("change", () => { taskOffset = 0; updates(); });
    const turn = { "tasks-first": () => 0, "tasks-prev": () => taskOffset - TASK_PAGE, "tasks-next": () => taskOffset + TASK_PAGE,
      "tasks-last": () => Math.floor((taskTotal - 1) / TASK_PAGE) * TASK_PAGE };
    $("#task-pager").addEventListener("click", (e) => {
      const button = e.target.closest("button");
      if (!button || !turn[button.id]) return;
      taskOffset = Math.max(0, turn[button.id]());
      updates();
    });
    const updates = live(async () => {
      try { await refresh(); } catch (error) {
        if (error.status === 404) {
          // Not only a deletion: another user may have signed in in this browser since the
          // page was drawn (its header still names the old one). Then the page is drawn
          // again for whoever is signed in now (a 401 here goes to the login page).
          const now = await api("GET", "/api/auth/me");
          if (now.user.name !== body.dataset.user) { location.reload(); return; }
          $("#main").innerHTML = `<h1>Job not found</h1><p>There is no job ${jobId} that you can see (it was deleted, or you are signed in as someone else). <a href="/">Back to the jobs</a></p>`;
          return;
        }
        throw error;
      }
    }, (e) => e.job_id === jobId);
    setInterval(() => { if (job && job.status === "active" && $("#stat-elapsed")) renderTimes(); }, 1000);
    setInterval(() => { if (job && job.status === "active" && $("#tasks")) renderTasks(); }, 5000);
  }

  // ------------------------------------------------------------- runners page

  function runnersPage() {
    let runners = [];
    const tbody = $("#runners tbody");
    // Control follows the runner's admin state (enabled / disabled / draining). The API's
    // "drain" and "disable after-task" are one thing (scheduling/workers.py apply_action:
    // the running task finishes, then the runner is disabled; with no task it is disabled
    // at once), so a busy runner gets two ways to stop: after its task, or now (its task
    // goes back to the queue); an idle one just Disable; a draining one no second drain.
    // Then its sleep schedule's editor and Delete, named after the runner for screen readers.
    const controls = (r) => {
      const state = r.admin_state || "enabled";
      const busy = Boolean(r.current_task_id);
      const buttons = [];
      if (state !== "enabled") buttons.push(["enable", "now", "Enable"]);
      if (state === "enabled" && busy) buttons.push(["disable", "after-task", "Finish task, then disable"]);
      if (state !== "disabled") buttons.push(["disable", "now", busy ? "Stop task, disable now" : "Disable"]);
      // Two groups, each wrapping as a whole: what the runner does, then the runner itself.
      return `<span class="group">${buttons.map(([action, when, label]) => `<button type="button" class="small${action === "disable" && when === "now" && busy ? " danger" : ""}" data-runner="${r.id}" data-action="${action}" data-when="${when}">${label}</button>`).join(" ")}</span>`
        + ` <span class="group"><button type="button" class="small" data-sleep-edit="${r.id}" aria-label="Sleep schedule of ${esc(r.name)}" aria-haspopup="dialog">Sleep schedule…</button>`
        + ` <button type="button" class="small danger" data-delete-runner="${r.id}" aria-label="Delete runner ${esc(r.name)}">Delete</button></span>`;
    };
    // CPU, or the Cycles device kind with the GPU Blender will use (by name when known).
    const device = (c) => {
      const kind = c.device || "CPU";
      if (kind === "CPU") return "CPU";
      const named = (c.blender_devices || []).filter((d) => d.startsWith(kind + ":")).map((d) => d.slice(kind.length + 1).trim());
      const index = c.gpu ?? 0;
      return `${kind}${named[index] ? `: ${named[index]}` : c.gpu !== null && c.gpu !== undefined ? ` #${c.gpu}` : ""}`;
    };
    // A sleep schedule as `farmhand runners` writes it: "mon-fri 09:00-18:00 (Europe/Paris)".
    const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    const formatDays = (days) => {
      const chosen = [...new Set(days.map((d) => DAYS.indexOf(d)).filter((i) => i >= 0))].sort((a, b) => a - b);
      if (chosen.length === DAYS.length) return "daily";
      const runs = [];
      for (const i of chosen) {
        const run = runs[runs.length - 1];
        if (run && run[run.length - 1] === i - 1) run.push(i); else runs.push([i]);
      }
      // A run over the week's end is one range, as the CLI's --window takes it: fri-mon.
      if (runs.length > 1 && runs[0][0] === 0 && runs[runs.length - 1].at(-1) === DAYS.length - 1) {
        runs[runs.length - 1].push(...runs.shift());
      }
      return runs.map((run) => (run.length === 1 ? DAYS[run[0]] : `${DAYS[run[0]]}-${DAYS[run[run.length - 1]]}`)).join(",");
    };
    const hasSchedule = (r) => Boolean(r.sleep_schedule && r.sleep_schedule.windows && r.sleep_schedule.windows.length);
    // On a phone each card names its schedule too, "–" (none) included, as the table does.
    const sleepCell = (r) => {
      if (!hasSchedule(r)) return '<td class="more sleep" data-label="Sleep schedule"><span class="muted">–</span></td>';
      const s = r.sleep_schedule;
      // A line may break between a window's days and hours, never inside either, and in
      // the zone after a "/" (America/Argentina/ComodRivadavia).
      const windows = s.windows.map((w) => `<span class="nowrap">${esc(formatDays(w.days))}</span> <span class="nowrap">${esc(w.start)}-${esc(w.end)}</span>`);
      return `<td class="more sleep line" data-label="Sleep schedule">${windows.join(", ")} <span class="muted">(${esc(s.timezone).replaceAll("/", "/<wbr>")})</span>${s.when === "now" ? ' <span class="muted small">· stops a running task</span>' : ""}</td>`;
    };
    const render = () => {
      if (!runners.length) {
        morph(tbody, '<tr><td colspan="10" class="empty">No runners yet. Create a registration token below and start a worker with it.</td></tr>');
        return;
      }
      morph(tbody, runners.map((r) => {
        const c = r.capabilities || {};
        // The runner list names the job and counts the task's frames itself: fetching
        // each busy job here would pull every task of a big job on every refresh.
        const tile = r.current_task_tile;
        const frames = tile ? ` · ${tileLabel(tile)}`
          : r.current_task_frame_count ? ` · ${r.current_task_frames_done}/${r.current_task_frame_count} frames` : "";
        // What the manager adds to its status (`status_note`, as `farmhand runners` shows
        // it): a runner too old for this manager gets no task, one that gave its task back
        // (its disk full) takes none for a while, so "idle" alone would promise work. A
        // short note is a badge beside the status; a sentence (a give-back and its reason,
        // with a path in it) is text under "no task", where it wraps anywhere and keeps
        // its case (a path breaks at its slashes): a badge would lowercase the path and widen
        // the status column.
        const short = r.status_note && r.status_note.length <= 24;
        const note = short ? `<br><span class="badge s-note">${esc(r.status_note)}</span>` : "";
        const current = r.current_task_id
          ? `<a class="breakable" href="/jobs/${r.current_job_id}">${breakable(r.current_job_name || "job " + r.current_job_id)}</a> <span class="muted small">task ${r.current_task_index ?? r.current_task_id}${frames}</span>`
          : r.status_note ? `<span class="muted">no task</span>${short ? "" : `<br><span class="small note">${esc(r.status_note).replaceAll("/", "/<wbr>")}</span>`}` : '<span class="muted">idle</span>';
        const hardware = [c.cpu, c.cores ? `${c.cores} cores` : "", gib(c.ram_bytes), ...(c.gpus || []).map((g) => (typeof g === "string" ? g : g.name || ""))].filter(Boolean).map(esc).join(" · ");
        const tags = (c.tags || r.tags || []).map((t) => `<span class="badge">${esc(t)}</span>`).join(" ");
        const none = (empty) => (empty ? " none" : "");
        // Where it is, as `farmhand runners` says it: the address the manager sees its
        // requests come from, and its own when that differs (NAT, an untrusted proxy).
        const seen = r.address || "", own = c.address || "";
        const where = seen && own && seen !== own ? `${seen} (local ${own})` : seen || own;
        const whereTitle = seen ? `Its requests come from ${seen}` + (own && own !== seen ? `; it says its own address is ${own}` : "") : "Its own address, as it reports it";
        // On a phone each runner is a card (app.css, table.cards): its name and status,
        // then what it does, the small facts with labels, its sleep schedule and controls.
        // Between a phone and a wide laptop it takes two lines (app.css, #runners): the
        // `lead` cells, the current task and the controls, then the `more` cells.
        return `<tr data-runner-name="${esc(r.name)}" data-runner-id="${r.id}">
          <td class="lead name"><strong class="breakable">${breakable(r.name)}</strong>${c.hostname && c.hostname !== r.name ? `<br><span class="muted small breakable">${breakable(c.hostname)}</span>` : ""}${where ? `<br><span class="muted small address breakable" title="${esc(whereTitle)}">${breakable(where)}</span>` : ""}</td>
          <td class="lead end state"><span class="status">${badge(r.status)}</span>${r.admin_state && r.admin_state !== "enabled" && r.admin_state !== r.status ? ` <span class="badge s-${esc(r.admin_state)}">${esc(r.admin_state)}</span>` : ""}${r.asleep && r.status !== "asleep" ? ' <span class="badge s-asleep">asleep</span>' : ""}${note}</td><td class="current line">${current}</td>
          <td class="more heartbeat" data-label="Heartbeat" data-heartbeat="${esc(r.last_heartbeat || "")}">${ago(r.last_heartbeat)}</td>
          <td class="more wrap small hardware${none(!hardware)}" data-label="Hardware">${hardware || "–"}</td><td class="more device" data-label="Device">${esc(device(c))}</td><td class="more blender" data-label="Blender">${(c.blender_versions || []).map(esc).join(", ") || "–"}</td>
          <td class="more tags${none(!tags)}" data-label="Tags">${tags || '<span class="muted">–</span>'}</td>${sleepCell(r)}<td class="line controls">${controls(r)}</td></tr>`;
      }).join(""));
    };
    // Answers can overtake one another (a live refresh sent before a delete answered
    // after it): only the answer to the latest request is shown.
    let asked = 0;
    const refresh = async () => {
      const mine = ++asked;
      const listed = await api("GET", "/api/admin/runners");
      if (mine !== asked) return;
      runners = listed;
      render();
    };
    // Heartbeats age every second without a refetch.
    setInterval(() => $$("[data-heartbeat]", tbody).forEach((td) => { td.textContent = ago(td.dataset.heartbeat || null); }), 1000);

    // Delete: the runner is forgotten, its secret stops working, its running task is
    // requeued. The keyboard moves on to the Delete of the runner that takes its place.
    async function deleteRunner(button) {
      const r = runners.find((x) => x.id === Number(button.dataset.deleteRunner));
      if (!r) return;
      const task = r.current_task_id
        ? `Its running task (task ${r.current_task_index ?? r.current_task_id} of “${r.current_job_name || "job " + r.current_job_id}”) goes back to the queue.`
        : "A task it is running goes back to the queue.";
      if (!confirm(`Delete runner “${r.name}”? Its secret stops working at once and its worker stops: it cannot register again by itself (its operator can, with a registration token). ${task}`)) return;
      // Its place in the list now: a live refresh may replace the list while we wait.
      const index = runners.findIndex((x) => x.id === r.id);
      button.disabled = true;
      try {
        await api("DELETE", `/api/admin/runners/${r.id}`);
      } catch (error) {
        if (error.status !== 404) { button.disabled = false; fail(error); return; } // 404: already gone
      }
      runners = runners.filter((x) => x.id !== r.id);
      render();
      const next = runners[Math.max(0, Math.min(index, runners.length - 1))];
      (next ? $(`[data-delete-runner="${next.id}"]`, tbody) : $("#new-runner-token"))?.focus();
      toast(`Runner “${r.name}” deleted.`);
      refresh().catch(fail);
    }

    // The sleep schedule's editor (a modal <dialog>): a time zone, windows of days and
    // hours, and what happens to a running task when a window starts.
    const dialog = $("#sleep-dialog"), form = $("#sleep-form");
    const zoneInput = $("#sleep-timezone"), windowsBox = $("#sleep-windows"), errorBox = $("#sleep-error");
    const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let editing = null, windowIds = 0, zonesListed = false;
    const browserZone = () => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch { return "UTC"; } };
    const listZones = () => {
      if (zonesListed) return;
      zonesListed = true;
      let zones = [];
      try { zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : []; } catch { zones = []; }
      if (!zones.includes("UTC")) zones = ["UTC", ...zones];
      $("#sleep-zones").replaceChildren(...zones.map((zone) => Object.assign(document.createElement("option"), { value: zone })));
    };
    const showError = (message, field) => {
      errorBox.textContent = message;
      errorBox.hidden = false;
      if (field) field.focus();
    };
    const numberWindows = () => {
      const all = $$(".sleep-window", windowsBox);
      all.forEach((box, i) => {
        $(".window-number", box).textContent = String(i + 1);
        $(".remove", box).setAttribute("aria-label", `Remove window ${i + 1}`);
      });
      $("#sleep-no-windows").hidden = all.length > 0;
    };
    // One window: seven day checkboxes, a start and an end. The end "24:00" (midnight at
    // the end of the day) is 00:00 in a time field.
    const addWindow = (w) => {
      const id = ++windowIds;
      const box = document.createElement("fieldset");
      box.className = "sleep-window";
      box.innerHTML = `<legend>Window <span class="window-number"></span></legend>
        <div class="days">${DAYS.map((d, i) => `<label class="day"><input type="checkbox" value="${d}"${w.days.includes(d) ? " checked" : ""}> ${DAY_NAMES[i]}</label>`).join("")}</div>
        <div class="times"><span class="time"><label for="sleep-start-${id}">From</label><input type="time" id="sleep-start-${id}" class="start"></span>
          <span class="time"><label for="sleep-end-${id}">until</label><input type="time" id="sleep-end-${id}" class="end"></span>
          <button type="button" class="small danger remove">Remove</button></div>`;
      $(".start", box).value = w.start;
      $(".end", box).value = w.end === "24:00" ? "00:00" : w.end;
      windowsBox.appendChild(box);
      numberWindows();
      return box;
    };
    const openSleep = (r) => {
      listZones();
      const s = hasSchedule(r) ? r.sleep_schedule : null;
      editing = { id: r.id, name: r.name };
      $("#sleep-runner").textContent = r.name;
      zoneInput.value = s ? s.timezone : browserZone();
      windowsBox.replaceChildren();
      (s ? s.windows : [{ days: DAYS.slice(0, 5), start: "09:00", end: "18:00" }]).forEach(addWindow);
      $(`input[name="sleep-when"][value="${s && s.when === "now" ? "now" : "after-task"}"]`, form).checked = true;
      $("#sleep-clear").hidden = !s;
      errorBox.hidden = true;
      dialog.showModal();
      zoneInput.focus();
    };
    // What the form says, or an Error naming the first problem and the field to fix.
    const readSchedule = () => {
      const problem = (message, field) => Object.assign(new Error(message), { field });
      const timezone = zoneInput.value.trim();
      if (!timezone) throw problem("Choose a time zone, e.g. Europe/Paris or UTC.", zoneInput);
      const windows = $$(".sleep-window", windowsBox).map((box, i) => {
        const days = $$("input[type=checkbox]:checked", box).map((c) => c.value);
        const start = $(".start", box).value.slice(0, 5), until = $(".end", box).value.slice(0, 5);
        if (!days.length) throw problem(`Window ${i + 1}: tick at least one day.`, $("input[type=checkbox]", box));
        if (!start) throw problem(`Window ${i + 1}: give the time it starts.`, $(".start", box));
        if (!until) throw problem(`Window ${i + 1}: give the time it ends.`, $(".end", box));
        const end = until === "00:00" ? "24:00" : until;
        if (start === end) throw problem(`Window ${i + 1} starts and ends at ${start}: it would never apply.`, $(".end", box));
        return { days, start, end };
      });
      return { timezone, windows, when: $('input[name="sleep-when"]:checked', form).value };
    };
    const setBusy = (busy) => $$(".dialog-actions button", form).forEach((b) => { b.disabled = busy; });
    async function saveSchedule(schedule) {
      const { id, name } = editing;
      setBusy(true);
      try {
        const info = await api("PUT", `/api/admin/runners/${id}/sleep-schedule`, schedule);
        runners = runners.map((r) => (r.id === info.id ? info : r));
        render();
        dialog.close();
        toast(schedule.windows.length ? `Sleep schedule of “${name}” saved.` : `Sleep schedule of “${name}” cleared.`);
      } catch (error) {
        if (error.status === 401) return;
        if (error.status === 404) showError(`Not saved: runner “${name}” no longer exists.`);
        else showError(`Not saved: ${error.message}`, /time zone/i.test(error.message) ? zoneInput : null);
      } finally {
        setBusy(false);
      }
    }
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      let schedule;
      try { schedule = readSchedule(); } catch (problem) { showError(problem.message, problem.field); return; }
      saveSchedule(schedule);
    });
    // Clearing needs no valid form: no windows, in a zone the manager surely knows.
    $("#sleep-clear").addEventListener("click", () => saveSchedule({ timezone: "UTC", windows: [], when: "after-task" }));
    $("#sleep-cancel").addEventListener("click", () => dialog.close());
    $("#sleep-add").addEventListener("click", () => {
      const box = addWindow({ days: [], start: "09:00", end: "18:00" });
      $("input[type=checkbox]", box).focus();
    });
    windowsBox.addEventListener("click", (e) => {
      const remove = e.target.closest(".remove");
      if (!remove) return;
      const box = remove.closest(".sleep-window");
      const after = box.nextElementSibling || box.previousElementSibling;
      box.remove();
      numberWindows();
      // The keyboard stays in the list: on the next window's Remove, else Add window.
      (after ? $(".remove", after) : $("#sleep-add")).focus();
    });
    // Escape or Cancel: the focus goes back to the runner's "Sleep schedule…" (its row
    // may have been rewritten meanwhile), or, with the runner gone, to the page's content.
    dialog.addEventListener("close", () => {
      const back = editing && $(`[data-sleep-edit="${editing.id}"]`, tbody);
      (back || $("#new-runner-token")).focus();
    });
    dialog.addEventListener("keydown", (e) => {
      // Tab wraps around the dialog's controls instead of leaving it for the browser's.
      if (e.key !== "Tab") return;
      const stops = $$("input, button", dialog).filter((el) => !el.disabled && el.getClientRects().length && !(el.type === "radio" && !el.checked));
      const first = stops[0], last = stops[stops.length - 1];
      if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
      else if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
    });

    tbody.addEventListener("click", async (e) => {
      const sleep = e.target.closest("[data-sleep-edit]");
      if (sleep) {
        const r = runners.find((x) => x.id === Number(sleep.dataset.sleepEdit));
        if (r) openSleep(r);
        return;
      }
      const remove = e.target.closest("[data-delete-runner]");
      if (remove) { deleteRunner(remove); return; }
      const button = e.target.closest("[data-action]");
      if (!button) return;
      button.disabled = true;
      try {
        await api("POST", `/api/admin/runners/${button.dataset.runner}/actions`, { action: button.dataset.action, when: button.dataset.when });
        refresh();
      } catch (error) {
        button.disabled = false;
        if (error.status === 404 || error.status === 405) toast("Runner control is not available on this manager yet.", "error");
        else fail(error);
      }
    });

    // Registration tokens.
    const tokensBody = $("#runner-tokens tbody");
    const loadTokens = async () => {
      const tokens = await api("GET", "/api/admin/runner-tokens");
      morph(tokensBody, tokens.length ? tokens.map((t) => `<tr data-token-id="${t.id}"><td class="num lead" data-label="Token">${t.id}</td><td data-label="Created">${when(t.created_at)}</td><td data-label="Expires">${t.expires_at ? when(t.expires_at) : "never"}</td>
        <td class="num" data-label="Used">${t.uses}${t.max_uses ? ` / ${t.max_uses}` : ""}</td><td class="lead">${t.active ? badge("active") : t.revoked_at ? badge("revoked") : t.max_uses && t.uses >= t.max_uses ? badge("spent") : badge("expired")}</td>
        <td class="lead end">${t.active ? `<button type="button" class="small danger" data-revoke="${t.id}">Revoke</button>` : ""}</td></tr>`).join("")
        : '<tr><td colspan="6" class="empty">No registration tokens.</td></tr>');
    };
    $("#new-runner-token").addEventListener("click", async () => {
      const hours = $("#token-expiry").value;
      const uses = $("#token-uses").value;
      try {
        const created = await api("POST", "/api/admin/runner-tokens", { expires_in_hours: hours ? Number(hours) : null, max_uses: uses ? Number(uses) : null });
        $("#runner-token-command").textContent = created.command;
        $("#runner-token-secret").textContent = created.secret;
        $("#new-token-result").hidden = false;
        await loadTokens();
      } catch (error) { fail(error); }
    });
    tokensBody.addEventListener("click", async (e) => {
      const button = e.target.closest("[data-revoke]");
      if (!button || !confirm("Revoke this registration token? Runners that already joined keep working.")) return;
      try { await api("DELETE", `/api/admin/runner-tokens/${button.dataset.revoke}`); await loadTokens(); } catch (error) { fail(error); }
    });
    // Registration tokens count their uses: a runner joining changes them too.
    live(async () => { await Promise.all([refresh(), loadTokens()]); }, (e) => e.kind === "runner" || e.kind === "task" || e.kind === "job", 400);
  }

  // ------------------------------------------------------------- storage page

  function storagePage() {
    const tbody = $("#storage-users tbody");
    const quotaHeader = $("#storage-users .quota-col");
    const gcButton = $("#gc-button");
    const gcLabel = gcButton.textContent;
    // Admins have no quota (`enforce_quota`): their row says so instead of a share.
    let admins = new Set();

    // A progress bar built with the DOM; `pct` may pass 100 (over quota): the bar stops
    // full, the text says how far over.
    const meter = (pct, label) => {
      const el = document.createElement("div");
      el.className = "bar" + (pct >= 100 ? " bad" : pct >= 90 ? " warn" : "");
      el.setAttribute("role", "progressbar");
      el.setAttribute("aria-valuemin", "0");
      el.setAttribute("aria-valuemax", "100");
      el.setAttribute("aria-valuenow", String(Math.min(100, Math.round(pct))));
      el.setAttribute("aria-label", label);
      el.appendChild(document.createElement("span")).style.width = `${Math.min(100, pct)}%`;
      return el;
    };
    const cell = (text, className) => {
      const td = document.createElement("td");
      if (className) td.className = className;
      td.textContent = text;
      return td;
    };
    const days = (n) => `${Number.isInteger(n) ? n : n.toFixed(1)} ${n === 1 ? "day" : "days"}`;

    function render(usage) {
      const used = Math.max(0, usage.disk_total_bytes - usage.disk_free_bytes);
      const diskPct = usage.disk_total_bytes ? (100 * used) / usage.disk_total_bytes : 0;
      const diskBar = $("#disk-bar");
      setBar(diskBar, diskPct);
      diskBar.classList.toggle("warn", diskPct >= 80 && diskPct < 95);
      diskBar.classList.toggle("bad", diskPct >= 95);
      diskBar.setAttribute("aria-valuetext", `${Math.round(diskPct)} % used, ${size(usage.disk_free_bytes)} free`);
      $("#disk-used").textContent = size(used);
      $("#disk-free").textContent = size(usage.disk_free_bytes);
      $("#disk-total").textContent = size(usage.disk_total_bytes);
      const share = usage.disk_total_bytes ? (100 * usage.total_bytes) / usage.disk_total_bytes : 0;
      const held = usage.open_upload_bytes ? `, and unfinished uploads ${size(usage.open_upload_bytes)} more` : "";
      $("#disk-note").textContent = `farmhand's blob store takes ${size(usage.total_bytes)} of it (${share > 0 && share < 0.1 ? "under 0.1" : share.toFixed(1)} %)${held}.`;

      $("#blob-count").textContent = usage.blobs.toLocaleString();
      $("#blob-total").textContent = size(usage.total_bytes);
      $("#blob-referenced").textContent = size(usage.referenced_bytes);
      $("#blob-unreferenced").textContent = size(usage.unreferenced_bytes);
      const openUploads = $("#open-uploads");
      openUploads.textContent = size(usage.open_upload_bytes);
      openUploads.title = plural(usage.open_uploads, "unfinished upload");
      // Garbage collection's two clocks (storage/gc.py): a file a job used is kept for
      // the retention, an upload no job ever used only for the grace period.
      const collects = `Garbage collection removes files a job used once unused for ${days(usage.blob_retention_days)} (the retention), and uploads no job ever used after ${duration(usage.blob_grace_seconds)} (the grace period).`;
      $("#retention").textContent = usage.unreferenced_bytes
        ? `${size(usage.unreferenced_bytes)} no job uses. ${collects}`
        : `Every stored file belongs to a job. ${collects}`;

      const quota = usage.user_quota_bytes;
      quotaHeader.hidden = !quota;
      $("#quota-note").textContent = quota ? `Quota: ${size(quota)} per user (admins have none)` : "No per-user quota";
      morph(tbody, usage.users.length ? usage.users.map((u) => {
        const row = document.createElement("tr");
        row.dataset.userName = u.name;
        row.append(cell(u.name, "name"), cell(String(u.jobs), "num"), cell(size(u.bytes), "num"));
        row.lastElementChild.dataset.bytes = String(u.bytes);
        // Unfinished resumable uploads: the bytes they hold now; the quota counts the
        // sizes they announced (`enforce_quota`), so the share below does too.
        const uploads = cell(u.open_uploads ? `${size(u.open_upload_bytes)} in ${plural(u.open_uploads, "upload")}` : "–", "num uploads");
        uploads.dataset.uploadBytes = String(u.open_upload_bytes);
        uploads.dataset.uploads = String(u.open_uploads);
        if (u.open_uploads) uploads.title = `${size(u.open_upload_reserved_bytes)} announced, counted towards the quota until they finish or are aborted`;
        row.append(uploads);
        if (quota && admins.has(u.user_id)) {
          row.append(cell("no quota (admin)", "quota muted small"));
        } else if (quota) {
          const pct = (100 * (u.bytes + u.open_upload_reserved_bytes)) / quota;
          const td = cell("", "quota"), box = document.createElement("div"), text = document.createElement("span");
          text.className = "pct";
          text.textContent = `${pct < 1 && pct > 0 ? "<1" : Math.round(pct)} %`;
          box.append(meter(pct, `${u.name}: ${Math.round(pct)} % of the quota`), text);
          td.append(box);
          row.append(td);
        }
        return row;
      }) : '<tr><td colspan="5" class="empty">No users.</td></tr>');
      $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every 30 s and when jobs change.`;
    }

    const refresh = async () => {
      const [usage, people] = await Promise.all([api("GET", "/api/admin/usage"), api("GET", "/api/admin/users").catch(() => null)]);
      if (people) admins = new Set(people.filter((p) => p.role === "admin").map((p) => p.id));
      render(usage);
    };
    // Job events cover deleted jobs and finished frames (outputs): what changes usage.
    const schedule = live(refresh, (e) => e.kind === "job" || e.kind === "output", 2000);
    setInterval(() => { if (document.visibilityState === "visible") schedule(); }, 30_000);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") schedule(); });

    gcButton.addEventListener("click", async () => {
      if (!confirm("Collect garbage now? Stored files no job uses, past their retention, are deleted for good.")) return;
      gcButton.disabled = true;
      gcButton.textContent = "Collecting…";
      try {
        const r = await api("POST", "/api/admin/gc");
        const parts = [r.removed || r.stray_files ? `Freed ${size(r.freed_bytes)}: ${plural(r.removed, "file")} removed` : "Nothing to remove"];
        if (r.stray_files) parts.push(`${plural(r.stray_files, "stray file")} cleaned up`);
        if (r.kept_unreferenced) parts.push(`${plural(r.kept_unreferenced, "unused file")} kept until ${r.kept_unreferenced === 1 ? "its" : "their"} retention ends`);
        const message = "Garbage collection: " + parts.join("; ") + ".";
        toast(message, "ok");
        $("#gc-result").textContent = `${message} (${new Date().toLocaleTimeString()})`;
        await refresh();
      } catch (error) {
        fail(error);
      } finally {
        gcButton.disabled = false;
        gcButton.textContent = gcLabel;
        // A disabled button loses the focus: give it back to the keyboard.
        if (document.activeElement === document.body) gcButton.focus();
      }
    });
  }

  // ------------------------------------------------------------- account page

  function accountPage() {
    const tokensBody = $("#api-tokens tbody");
    const loadTokens = async () => {
      const tokens = await api("GET", "/api/tokens");
      // On a phone each token is a card (app.css, table.cards): name, state and Revoke first.
      tokensBody.innerHTML = tokens.map((t) => `<tr data-token-id="${t.id}"><td class="lead text">${esc(t.name)}</td><td data-label="Created">${when(t.created_at)}</td>
        <td class="lead">${t.revoked_at ? badge("revoked") : badge("active")}</td>
        <td class="lead end">${t.revoked_at ? "" : `<button type="button" class="small danger" data-revoke="${t.id}" aria-label="Revoke token ${esc(t.name)}">Revoke</button>`}</td></tr>`).join("")
        || '<tr><td colspan="4" class="empty">No tokens.</td></tr>';
    };
    $("#new-token-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const created = await api("POST", "/api/tokens", { name: $("#token-name").value.trim() });
        $("#token-secret").textContent = created.secret;
        $("#token-result").hidden = false;
        $("#token-name").value = "";
        await loadTokens();
      } catch (error) { fail(error); }
    });
    tokensBody.addEventListener("click", async (e) => {
      const button = e.target.closest("[data-revoke]");
      if (!button || !confirm("Revoke this token? Anything using it stops working (including this browser, if you signed in with it… until the session ends).")) return;
      try { await api("DELETE", `/api/tokens/${button.dataset.revoke}`); await loadTokens(); } catch (error) { fail(error); }
    });
    loadTokens().catch(fail);
    $("#password-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      if ($("#new-password").value !== $("#new-password-again").value) { toast("The two new passwords differ.", "error"); return; }
      try {
        const result = await api("POST", "/api/auth/password", { old_password: $("#old-password").value, new_password: $("#new-password").value });
        if (result.csrf) {
          csrf = result.csrf;
          $$('input[name="csrf"]').forEach((input) => { input.value = result.csrf; });
        }
        e.target.reset();
        toast("Password changed; other sessions are signed out.", "ok");
      } catch (error) { fail(error); }
    });
    if (!isAdmin) return;
    const usersBody = $("#users tbody");
    let users = [];
    // Sign-in as `farmhand users list` words it (cli/users_db.listing): a password left
    // from before one needed an e-mail, on an account without one, lets nobody in.
    const signInWays = (u) =>
      [u.has_password ? (u.email ? "password" : "password (no e-mail: unusable)") : "", ...u.providers].filter(Boolean).join(", ") || "token only";
    // Locked out by failed sign-ins (`locked_until`), in minutes as the sign-in page
    // says it; Unlock (or Set password) lets them try again at once.
    const lockedMinutes = (u) => (u.locked_until ? Math.max(1, Math.ceil((Date.parse(u.locked_until) - Date.now()) / 60000)) : 0);
    const loadUsers = async () => {
      users = await api("GET", "/api/admin/users");
      // Your own account cannot be disabled, demoted or deleted (the API answers 409):
      // its row offers neither. On a phone each user is a card (app.css, table.cards).
      // `morph`: rows and buttons stay the same elements, and so keep the focus (a
      // button's label may change: Set e-mail becomes Change e-mail).
      const me = body.dataset.user;
      morph(usersBody, users.map((u) => `<tr data-user-id="${u.id}" data-user-name="${esc(u.name)}"><td class="lead text"><strong>${esc(u.name)}</strong></td><td class="text email${u.email ? "" : " none"}" data-label="E-mail">${esc(u.email || "–")}</td><td class="lead">${badge(u.role)}</td>
        <td data-label="Sign-in">${esc(signInWays(u))}</td>
        <td class="lead">${u.disabled ? badge("disabled") : badge("active")}${lockedMinutes(u) ? ` <span class="badge s-failed">locked (${lockedMinutes(u)} min)</span>` : ""}</td><td data-label="Created">${when(u.created_at)}</td>
        <td class="line last"><span class="actions"><button type="button" class="small" data-user-action="email">${u.email ? "Change e-mail" : "Set e-mail"}</button>
        <button type="button" class="small" data-user-action="password">Set password</button>
        ${lockedMinutes(u) ? '<button type="button" class="small" data-user-action="unlock">Unlock</button>' : ""}
        ${u.name === me ? '<span class="muted small">You cannot disable or delete yourself.</span>' : `<button type="button" class="small" data-user-action="${u.disabled ? "enable" : "disable"}">${u.disabled ? "Enable" : "Disable"}</button>
        <button type="button" class="small danger" data-user-action="delete">Delete</button>`}</span></td></tr>`).join(""));
    };

    // How someone signs in (`#sign-in-editor`, above the table, opened by a row's Set
    // e-mail or Set password): their e-mail, then a password. A password signs in only
    // together with an e-mail and the API refuses one to an account without (409), so
    // for such an account the password waits, saying why, until an e-mail is saved in
    // the same place. What the API refuses (an address that is malformed or another
    // account's in any case, a short password) is said under the field it concerns,
    // which keeps the focus, rather than in a toast that goes away.
    const editor = $("#sign-in-editor");
    const emailForm = $("#set-email-form"), emailInput = $("#set-email-value"), emailError = $("#set-email-error");
    const passwordForm = $("#set-password-form"), passwordInput = $("#set-password-value"), passwordError = $("#set-password-error");
    let editing = null; // { id, action }: whose sign-in, and the row's button that opened it
    const showProblem = (input, box, message) => {
      box.textContent = message;
      box.hidden = !message;
      if (message) { input.setAttribute("aria-invalid", "true"); input.focus(); } else input.removeAttribute("aria-invalid");
    };
    const showSignIn = (u) => {
      $("#sign-in-name").textContent = u.name;
      $("#set-email-submit").textContent = u.email ? "Change e-mail" : "Save e-mail";
      const note = $("#set-password-note");
      note.textContent = u.email ? "" : `${u.name} has no e-mail yet, and a password signs in only together with one: save an e-mail above first, then set the password here.`;
      note.hidden = Boolean(u.email);
      passwordInput.disabled = $("#set-password-submit").disabled = !u.email;
    };
    const openSignIn = (u, action) => {
      editing = { id: u.id, action };
      emailForm.reset();
      passwordForm.reset();
      showProblem(emailInput, emailError, "");
      showProblem(passwordInput, passwordError, "");
      emailInput.value = u.email || "";
      showSignIn(u);
      editor.hidden = false;
      (action === "password" && u.email ? passwordInput : emailInput).focus();
    };
    // Closing sends the keyboard back to the row's button that opened the editor.
    const closeSignIn = () => {
      editor.hidden = true;
      const back = editing && $(`#users tr[data-user-id="${editing.id}"] [data-user-action="${editing.action}"]`);
      editing = null;
      back?.focus();
    };
    emailForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!editing) return;
      const email = emailInput.value.trim();
      if (!email) { showProblem(emailInput, emailError, "Type the e-mail address they sign in with."); return; }
      const { id } = editing;
      try {
        const info = await api("PATCH", `/api/admin/users/${id}`, { email });
        showProblem(emailInput, emailError, "");
        await loadUsers();
        if (!editing || editing.id !== id) return;
        emailInput.value = info.email;
        showSignIn(info);
        toast(`${info.name} signs in with ${info.email}.`, "ok");
        passwordInput.focus();
      } catch (error) {
        if (error.status !== 401) showProblem(emailInput, emailError, `Not saved: ${sentence(error.message)}`);
      }
    });
    passwordForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!editing) return;
      const u = users.find((x) => x.id === editing.id);
      try {
        await api("PUT", `/api/admin/users/${editing.id}/password`, { password: passwordInput.value });
        toast(`Password set${u ? ` for ${u.name}, who signs in with ${u.email}` : ""}; their sessions are signed out.`, "ok");
        await loadUsers();
        closeSignIn();
      } catch (error) {
        if (error.status !== 401) showProblem(passwordInput, passwordError, `Not set: ${sentence(error.message)}`);
      }
    });
    $("#set-password-cancel").addEventListener("click", closeSignIn);
    editor.addEventListener("keydown", (e) => { if (e.key === "Escape") closeSignIn(); });

    usersBody.addEventListener("click", async (e) => {
      const button = e.target.closest("[data-user-action]");
      if (!button) return;
      const row = button.closest("tr");
      const { userId, userName } = row.dataset;
      const action = button.dataset.userAction;
      try {
        if (action === "email" || action === "password") {
          const u = users.find((x) => String(x.id) === userId);
          if (u) openSignIn(u, action);
          return;
        }
        if (action === "delete") {
          if (!confirm(`Delete ${userName}? Their tokens stop working. (Someone who owns jobs can only be disabled.)`)) return;
          await api("DELETE", `/api/admin/users/${userId}`);
          if (editing && String(editing.id) === userId) { editor.hidden = true; editing = null; }
        } else if (action === "unlock") {
          await api("POST", `/api/admin/users/${userId}/unlock`);
          toast(`${userName} may sign in again (an address refused for too many failures stays refused until its wait ends).`, "ok");
        } else {
          await api("PATCH", `/api/admin/users/${userId}`, { disabled: action === "disable" });
        }
        await loadUsers();
      } catch (error) { fail(error); }
    });
    $("#new-user-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const created = await api("POST", "/api/admin/users", {
          name: $("#user-name").value.trim(), email: $("#user-email").value.trim() || null, role: $("#user-role").value,
          password: $("#user-password").value || null,
        });
        $("#user-result-name").textContent = created.user.name;
        $("#user-token").textContent = created.token;
        $("#user-result").hidden = false;
        e.target.reset();
        await loadUsers();
      } catch (error) { fail(error); }
    });
    loadUsers().catch(fail);
  }

  const pages = { jobs: jobsPage, submit: submitPage, job: jobPage, runners: runnersPage, storage: storagePage, account: accountPage };
  const start = pages[body.dataset.page];
  if (start) start();
})();
