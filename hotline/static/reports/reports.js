// The reports page's charts (ECharts, vendored): calls per hour of the day against the same
// weekday a week before, and the answer rate by hour. The series come from the page's JSON
// block #report-charts (reports.period.chart_data); no inline script (CSP 'self').
(function () {
  "use strict";

  function draw() {
    const block = document.getElementById("report-charts");
    if (!block || typeof echarts === "undefined") {
      return;
    }
    const data = JSON.parse(block.textContent);
    const labels = block.dataset;
    const calls = echarts.init(document.getElementById("chart-calls"), null,
                               { renderer: "canvas" });
    calls.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { top: 0, data: [labels.labelCallsDay, labels.labelCallsBefore] },
      grid: { left: 40, right: 16, top: 36, bottom: 28 },
      xAxis: { type: "category", data: data.hours },
      yAxis: { type: "value", minInterval: 1 },
      series: [
        { id: "calls-day", name: labels.labelCallsDay, type: "bar", data: data.calls },
        { id: "calls-week-before", name: labels.labelCallsBefore, type: "line",
          data: data.calls_week_before },
      ],
    });
    const rate = echarts.init(document.getElementById("chart-answer-rate"), null,
                              { renderer: "canvas" });
    rate.setOption({
      animation: false,
      tooltip: { trigger: "axis", valueFormatter: (v) => (v === null ? "—" : v + "%") },
      legend: { top: 0, data: [labels.labelRate] },
      grid: { left: 44, right: 16, top: 36, bottom: 28 },
      xAxis: { type: "category", data: data.hours },
      yAxis: { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" } },
      series: [
        { id: "answer-rate", name: labels.labelRate, type: "line", connectNulls: false,
          data: data.answer_rate },
      ],
    });
    window.addEventListener("resize", () => { calls.resize(); rate.resize(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
