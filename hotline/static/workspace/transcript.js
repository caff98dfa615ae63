// The order page's call transcripts (通话转写): a time stamp plays the call's recording
// from that utterance on. No inline script (CSP 'self').
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".transcript-seek") : null;
    if (!button) return;
    var call = button.closest("li[data-call]");
    var audio = call ? call.querySelector("audio.call-recording") : null;
    if (!audio) return;
    var seek = parseFloat(button.getAttribute("data-seek")) || 0;
    var go = function () { audio.currentTime = seek; audio.play(); };
    if (audio.readyState >= 1) { go(); } else {
      audio.addEventListener("loadedmetadata", go, { once: true });
      audio.preload = "metadata";
      audio.load();
    }
  });
})();
