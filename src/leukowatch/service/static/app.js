// Progressive enhancement only: every page works without this file (no inline script anywhere, so a
// Content-Security-Policy of script-src 'self' holds). It adds: the unit next to each count label,
// the ANC as the user types, and the Print and "Copy for the note" buttons. Printing keeps closed
// expanders closed, so a one-off result fits two A4 pages; the PDF carries every rule and source.
(function () {
  var root = document.documentElement;
  root.classList.remove("no-js");
  root.classList.add("js");

  var form = document.getElementById("cbc-form");
  if (form) {
    var unitSelect = form.querySelector("#unit");
    var live = document.getElementById("anc-live");
    var isPercent = function () {
      var checked = form.querySelector('input[name="mode"]:checked');
      return checked && checked.value === "percent";
    };
    var number = function (id) {
      var el = form.querySelector("#" + id);
      var text = el ? el.value.trim().replace(/\s/g, "") : "";
      // a decimal comma is accepted as a decimal point; thousands separators are not guessed
      if (/^\d+,\d+$/.test(text)) text = text.replace(",", ".");
      return /^\d*\.?\d+$/.test(text) ? parseFloat(text) : null;
    };
    var labels = function () {
      var unitText = unitSelect ? unitSelect.options[unitSelect.selectedIndex].text : "";
      form.querySelectorAll(".unit-label").forEach(function (el) {
        var pct = isPercent() && el.getAttribute("data-differential") === "1";
        el.textContent = "(" + (pct ? "% of WBC" : unitText) + ")";
      });
    };
    // The same arithmetic as the server: ANC = WBC x (segmented % + band %) / 100 in % mode; the
    // neutrophil count itself in absolute mode. The server's verdict is what counts; this is a preview.
    var anc = function () {
      if (!live) return;
      var unit = unitSelect ? unitSelect.value : "10*9/L";
      var perUl = unit === "cells/uL";
      var wbc = number("wbc"), neut = number("neutrophils"), bands = number("bands");
      var value = null, how = "";
      if (isPercent()) {
        if (wbc !== null && neut !== null) {
          var pct = neut + (bands || 0);
          value = wbc * pct / 100;
          how = " = WBC " + wbc + " × (" + neut + (bands ? " + " + bands : "") + ") % / 100";
        }
      } else if (neut !== null) {
        value = neut;
      }
      if (value === null) {
        live.textContent = isPercent() ? "enter the WBC and the neutrophil %" : "enter the neutrophils";
        return;
      }
      var inG = perUl ? value / 1000 : value;
      var cells = Math.round(inG * 1000).toLocaleString("en");
      live.textContent = (Math.round(inG * 1000) / 1000) + " ×10⁹/L (" + cells + " cells/µL)" + how;
    };
    var update = function () { labels(); anc(); };
    form.addEventListener("change", update);
    form.addEventListener("input", anc);
    update();
  }

  document.querySelectorAll('[data-action="print"]').forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  document.querySelectorAll('[data-action="copy-note"]').forEach(function (b) {
    b.addEventListener("click", function () {
      var text = document.getElementById("note-text");
      if (!text) return;
      var done = function () {
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = "Copy for the note"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text.value).then(done, function () { text.select(); document.execCommand("copy"); done(); });
      } else {
        text.closest("details").open = true;
        text.select();
        document.execCommand("copy");
        done();
      }
    });
  });

  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
})();
