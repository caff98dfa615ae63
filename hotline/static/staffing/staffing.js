// The staffing chart: agents needed (Erlang C) against agents scheduled per half-hour, and
// the forecast calls, from the page's JSON block (no inline script: CSP 'self').
(function () {
  "use strict";
  function draw() {
    var holder = document.getElementById("staffing-chart");
    var block = document.getElementById("staffing-data");
    if (!holder || !block || typeof window.echarts === "undefined") { return; }
    var data = JSON.parse(block.textContent);
    var chart = window.echarts.init(holder);
    chart.setOption({
      tooltip: { trigger: "axis" },
      legend: { data: [holder.dataset.needed, holder.dataset.scheduled, holder.dataset.calls] },
      xAxis: { type: "category", data: data.slots },
      yAxis: [{ type: "value", minInterval: 1 }, { type: "value" }],
      series: [
        { name: holder.dataset.needed, type: "bar", data: data.needed },
        { name: holder.dataset.scheduled, type: "line", step: "middle", data: data.scheduled },
        { name: holder.dataset.calls, type: "line", yAxisIndex: 1, data: data.calls }
      ]
    });
    holder.dataset.drawn = "true";
    window.addEventListener("resize", function () { chart.resize(); });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
