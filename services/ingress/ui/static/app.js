// sendstream's dashboard: the one script of every page (the Content-Security-Policy allows no other).
// Live: an element marked `data-live` is refreshed in place when the organization's events say
// something changed (the server's /ui/live stream), without a reload. Nothing else depends on it:
// every page works without script.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region || !window.EventSource) return;
  var timer = null;

  function typing() {
    if (region.contains(document.activeElement) && document.activeElement.form) return true;
    var fields = region.querySelectorAll("input:not([type=hidden]), textarea");
    return Array.prototype.some.call(fields, function (f) { return f.value !== ""; });
  }

  function refresh() {
    if (typing()) {  // never throw away what the person is writing: try again once they are done
      timer = window.setTimeout(refresh, 2000);
      return;
    }
    timer = null;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) window.location.reload();  // the session ended: to the login form
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (fresh && fresh.innerHTML !== region.innerHTML) {
          region.innerHTML = fresh.innerHTML;
          region.dispatchEvent(new CustomEvent("sendstream:refreshed", { bubbles: true }));
        }
      })
      .catch(function () { /* the next event tries again */ });
  }

  function changed() {
    if (timer === null) timer = window.setTimeout(refresh, 300);
  }

  // One stream for all of this browser's dashboard tabs (each would hold one of the six connections a
  // browser keeps per site): the tab holding the lock listens and tells the others.
  var channel = window.BroadcastChannel ? new BroadcastChannel("sendstream-live") : null;
  function listen() {
    var stream = new EventSource("/ui/live");
    stream.onopen = function () { document.documentElement.dataset.live = "on"; };
    stream.onmessage = function (event) {
      changed();
      if (channel) channel.postMessage(event.data);
    };
  }
  function lead() {
    listen();
    return new Promise(function () {});  // the lock is held while this tab lives
  }
  if (channel && navigator.locks) {
    navigator.locks.request("sendstream-live", { ifAvailable: true }, function (lock) {
      if (lock) return lead();
      channel.onmessage = changed;  // another tab listens; this one takes over when that one closes
      document.documentElement.dataset.live = "on";
      navigator.locks.request("sendstream-live", lead);
    });
  } else {
    listen();
  }
})();
