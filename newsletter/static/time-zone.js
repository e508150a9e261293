// The preference centre's time zone starts from the browser's zone when the subscriber never chose
// one (the server marks the select). Progressive enhancement: without this script the select
// simply shows the stored zone. Served as a file: the pages' CSP allows no inline script.
(function () {
  "use strict";
  var select = document.querySelector("select[data-start-from-browser]");
  if (!select || !window.Intl || !Intl.DateTimeFormat) return;
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var option = zone && Array.prototype.find.call(select.options, function (o) { return o.value === zone; });
  if (!option) return; // a zone we do not offer (an old alias): keep the stored one
  select.value = zone;
  select.setAttribute("data-from-browser", zone);
  var hint = document.getElementById(select.id + "-hint");
  if (hint) hint.hidden = false;
})();
