// Keyboard shortcuts of the review pages. Every control is also a plain form or link,
// reachable with Tab: this file only adds single-key shortcuts. Keys typed into a text
// field are never taken as shortcuts.
(function () {
  "use strict";
  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && !/^(radio|checkbox|submit|button|hidden)$/.test(el.type));
  }
  function submit(id) {
    var form = document.getElementById(id);
    if (form) { form.requestSubmit(); return true; }
    return false;
  }
  function focus(id) {
    var el = document.getElementById(id);
    if (el) { el.focus(); return true; }
    return false;
  }
  function follow(id) {
    var el = document.getElementById(id);
    if (el) { window.location.assign(el.href); return true; }
    return false;
  }
  var classes = { "1": "cls-A1", "2": "cls-A2", "3": "cls-B1", "4": "cls-B2" };
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing || typing(ev.target)) return;
    var done = false;
    var key = ev.key;
    if (classes[key]) {
      var radio = document.getElementById(classes[key]);
      if (radio) { radio.checked = true; radio.focus(); done = true; }
    } else if (key === "r") { done = submit("reveal-form"); }
    else if (key === "b") { done = follow("blur-link"); }
    else if (key === "c") {
      var form = document.getElementById("confirm-form");
      if (form) {
        if (!form.querySelector("input[name=classification]:checked")) {
          focus("cls-A1");
          form.reportValidity();
        } else { form.requestSubmit(); }
        done = true;
      }
    }
    else if (key === "f") { done = focus("fp-reason"); }
    else if (key === "e") { done = focus("esc-note"); }
    else if (key === "s") { done = submit("skip-form"); }
    else if (key === "q") { done = follow("queue-link"); }
    else if (key === "n") {
      var first = document.querySelector("a.item-link[data-free]");
      if (first) { window.location.assign(first.href); done = true; }
    }
    if (done) ev.preventDefault();
  });
  // tells people and tests that the shortcuts are active on this page
  document.documentElement.setAttribute("data-keys", "on");
})();
