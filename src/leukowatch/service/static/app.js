// Progressive enhancement only: the form works without this. It shows, next to each count label,
// the unit the value will be read in (the count unit, or % of WBC for the differential).
(function () {
  var form = document.getElementById("cbc-form");
  if (!form) return;
  function update() {
    var percent = form.querySelector('input[name="mode"]:checked');
    var isPct = percent && percent.value === "percent";
    var unit = form.querySelector("#unit");
    var unitText = unit ? unit.options[unit.selectedIndex].text : "";
    form.querySelectorAll(".unit-label").forEach(function (el) {
      var pct = isPct && el.getAttribute("data-differential") === "1";
      el.textContent = "(" + (pct ? "% of WBC" : unitText) + ")";
    });
  }
  form.addEventListener("change", update);
  update();
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();
})();
