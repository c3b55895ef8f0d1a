// airflow-hoop Audit pages: local times, Airflow's colour mode, the verification badge.
// Served as a file (the pages' Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  function colourMode() {
    var mode = null;
    try { mode = window.top.localStorage.getItem("chakra-ui-color-mode"); } catch (e) { /* other origin */ }
    if (mode === "dark" || mode === "light") document.documentElement.classList.add(mode);
  }
  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = el.textContent; el.textContent = d.toLocaleString(); }
    });
  }
  function timeZone() {
    document.querySelectorAll("input.tz-offset").forEach(function (el) {
      el.value = String(new Date().getTimezoneOffset());
    });
  }
  function badges() {
    document.querySelectorAll("[data-badge]").forEach(function (el) {
      fetch(el.getAttribute("data-badge"), { credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (b) { return [r.status, b]; }); })
        .then(function (res) {
          var b = res[1];
          el.className = "badge " + (b.state || "failed");
          el.textContent = b.text || ("verification unavailable (" + res[0] + ")");
        })
        .catch(function () { el.className = "badge failed"; el.textContent = "verification unavailable"; });
    });
  }
  colourMode();
  document.addEventListener("DOMContentLoaded", function () { localTimes(); timeZone(); badges(); });
})();
