/* An alert of the board (告警) in words: shared by the wallboard (board/board.js) and the
 * supervisors' notices panel on the desk (desk/notices.js). The words come from the page's
 * #alert-words block (agent_desk/_alert_words.html), in the page's language. */
(function () {
  "use strict";

  var block = document.getElementById("alert-words");
  var words = block ? JSON.parse(block.textContent) : { alerts: {}, centre: "" };

  function text(alert) {
    var template = words.alerts[alert.kind] || alert.kind;
    var threshold = alert.threshold;
    if (alert.kind === "service_level") {
      threshold = Math.round(threshold * 100);
    } else if (alert.kind === "paused") {
      threshold = Math.round(threshold / 60);
    }
    var said = template.replace("{threshold}", threshold);
    var who = alert.address || alert.agent || (alert.queue === "" ? words.centre : alert.queue);
    return who + ": " + said;
  }

  window.HotlineAlerts = { text: text };
})();
