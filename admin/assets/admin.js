// Live refresh: fetch the page again every data-refresh-ms and swap the
// <main> in place. Without this script the page refreshes itself through
// <noscript><meta http-equiv=refresh>.
(function () {
  "use strict";
  var ms = parseInt(document.body.getAttribute("data-refresh-ms"), 10) || 2000;
  var busy = false;
  function tick() {
    // Do not swap the page under someone typing into a form.
    var a = document.activeElement;
    if (busy || (a && (a.tagName === "INPUT" || a.tagName === "SELECT"))) return;
    busy = true;
    fetch("./", { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (res) { if (!res.ok) throw new Error(res.status); return res.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var next = doc.getElementById("live");
        var cur = document.getElementById("live");
        if (next && cur) cur.replaceWith(next);
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); })
      .finally(function () { busy = false; });
  }
  setInterval(tick, ms);
})();
