// Click (or Enter on) a commit of the graph: show its builds and runs beside it.
(function () {
  "use strict";
  var rows = document.querySelectorAll(".graph .row[data-commit]");
  function show(hash) {
    var sections = document.querySelectorAll(".details section[data-commit]");
    for (var i = 0; i < sections.length; i++) {
      sections[i].hidden = sections[i].getAttribute("data-commit") !== hash;
    }
    for (var j = 0; j < rows.length; j++) {
      rows[j].classList.toggle("selected", rows[j].getAttribute("data-commit") === hash);
    }
    var hint = document.getElementById("details-hint");
    if (hint) { hint.hidden = true; }
  }
  for (var k = 0; k < rows.length; k++) {
    rows[k].addEventListener("click", function (ev) { show(ev.currentTarget.getAttribute("data-commit")); });
    rows[k].addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        show(ev.currentTarget.getAttribute("data-commit"));
      }
    });
  }
  var first = document.querySelector(".graph .row[data-initial]");
  if (first) { show(first.getAttribute("data-commit")); }
})();
