// Live pages: a page with data-live listens to the server's events
// (/console/events) and shows what arrives without a reload. The inbox
// gets the new rows on top (a row it has already is skipped); the
// overview reads itself again. A hidden tab lets go of its stream.
(function () {
  var main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  var url = main.getAttribute("data-live");
  var source = null;
  var refreshing = false;

  function refresh(then) {
    if (refreshing) {
      if (then) then();
      return;
    }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var old = document.querySelector("main");
        if (fresh && old) {
          old.innerHTML = fresh.innerHTML;
          var next = fresh.getAttribute("data-live");
          if (next) url = next;
        }
      })
      .finally(function () {
        refreshing = false;
        if (then) then();
      });
  }

  function rows(event) {
    var table = document.getElementById("pushes");
    if (!table) return refresh(null);
    var none = document.getElementById("no-push");
    if (none) none.remove();
    var holder = document.createElement("tbody");
    holder.innerHTML = event.data;
    var incoming = Array.prototype.slice.call(holder.children);
    for (var i = incoming.length - 1; i >= 0; i--) {
      var id = incoming[i].getAttribute("data-id");
      if (!table.querySelector('tr[data-id="' + id + '"]')) {
        table.insertBefore(incoming[i], table.firstChild);
      }
    }
  }

  function open() {
    if (source) return;
    source = new EventSource(url);
    source.addEventListener("push", rows);
    source.addEventListener("changed", function () { refresh(null); });
    source.addEventListener("reload", function () { window.location.reload(); });
  }

  function close() {
    if (source) source.close();
    source = null;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      close();
    } else {
      refresh(open);
    }
  });
  open();
})();
