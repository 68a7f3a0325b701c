// Live pages: a page with data-live listens to the server's events
// (/console/events) and shows what arrives without a reload. The inbox
// gets the new rows on top; the overview is read again.
(function () {
  var main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  var source = new EventSource(main.getAttribute("data-live"));
  var refreshing = false;
  source.addEventListener("push", function (event) {
    var rows = document.getElementById("pushes");
    if (rows) {
      var none = document.getElementById("no-push");
      if (none) none.remove();
      rows.insertAdjacentHTML("afterbegin", event.data);
      return;
    }
    if (refreshing) return;
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var old = document.querySelector("main");
        if (fresh && old) old.innerHTML = fresh.innerHTML;
      })
      .finally(function () { refreshing = false; });
  });
})();
