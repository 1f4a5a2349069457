// The crisis board's own script: live parts over server-sent events, local times,
// navigation and the filter box without reloading. No library, no build step.
(() => {
  "use strict";
  const live = document.getElementById("live");
  const liveText = document.getElementById("live-text");
  const form = document.getElementById("filter");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const clock = new Intl.DateTimeFormat(undefined,
    { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dated = new Intl.DateTimeFormat(undefined,
    { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const full = new Intl.DateTimeFormat(undefined,
    { dateStyle: "full", timeStyle: "long" });
  let source = null;
  let retry = null;

  // Times arrive as UTC epoch seconds; each viewer reads them in their own zone.
  function localTimes(root) {
    const today = new Date().toDateString();
    for (const el of root.querySelectorAll("time[data-t]")) {
      const when = new Date(Number(el.dataset.t) * 1000);
      el.textContent = (when.toDateString() === today ? clock : dated).format(when);
      el.title = full.format(when);
    }
  }

  function setLive(state, text) {
    live.dataset.state = state;
    liveText.textContent = text;
  }

  function connect() {
    if (source) source.close();
    clearTimeout(retry);
    source = new EventSource("/board/events" + location.search);
    setLive("connecting", "connecting…");
    source.addEventListener("open", () => setLive("live", "live"));
    source.addEventListener("part", (event) => {
      const part = JSON.parse(event.data);
      const target = document.getElementById(part.id);
      if (!target || !target.dataset.part) return;
      // Rendered and escaped by the server's templates; the page's policy runs no
      // inline script whatever the markup says.
      target.innerHTML = part.html;
      localTimes(target);
    });
    source.addEventListener("version", (event) => {
      const stamp = JSON.parse(event.data);
      document.body.dataset.version = stamp.version;
      setLive("live", "live · " + clock.format(new Date()) + " · times in " + zone);
    });
    source.addEventListener("logout", () => toLogin());
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        setLive("reconnecting", "reconnecting…");
        return;
      }
      setLive("down", "disconnected: retrying");
      // A closed stream is a refusal (401) or a server gone away: tell them apart.
      fetch("/api/health", { credentials: "same-origin" }).then((answer) => {
        if (answer.status === 401) toLogin();
        else retry = setTimeout(connect, 2000);
      }, () => { retry = setTimeout(connect, 2000); });
    });
  }

  function toLogin() {
    if (source) source.close();
    location.assign("/board/login?next=" + encodeURIComponent(location.pathname + location.search));
  }

  function syncForm() {
    if (!form) return;
    const params = new URLSearchParams(location.search);
    for (const name of ["m", "q", "status", "channel"]) {
      const field = form.elements.namedItem(name);
      if (field && document.activeElement !== field) field.value = params.get(name) || "";
    }
  }

  function go(url, replace) {
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
    syncForm();
    connect();
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    go(link.href, false);
  });
  window.addEventListener("popstate", () => { syncForm(); connect(); });

  if (form) {
    let typing = null;
    const apply = () => {
      const params = new URLSearchParams();
      for (const [name, value] of new FormData(form)) {
        if (value) params.set(name, value);
      }
      const query = params.toString();
      go(location.pathname + (query ? "?" + query : ""), true);
    };
    form.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(apply, 250); });
    form.addEventListener("submit", (event) => { event.preventDefault(); clearTimeout(typing); apply(); });
  }

  localTimes(document);
  if (window.EventSource) connect();
})();
