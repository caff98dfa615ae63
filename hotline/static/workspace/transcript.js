// The order page's call transcripts (通话转写): a time stamp plays the call's recording
// from that utterance on; a page opened from a transcript search's hit (?call=&t=, which
// the server turns into data-play-from on that call) plays it from that moment at once.
// No inline script (CSP 'self').
(function () {
  "use strict";

  function playFrom(audio, seek) {
    var go = function () {
      audio.currentTime = seek;
      var playing = audio.play();
      // a browser that lets no page play sound unasked: the player waits at the moment
      if (playing && playing.catch) playing.catch(function () {});
    };
    if (audio.readyState >= 1) { go(); } else {
      audio.addEventListener("loadedmetadata", go, { once: true });
      audio.preload = "metadata";
      audio.load();
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".transcript-seek") : null;
    if (!button) return;
    var call = button.closest("li[data-call]");
    var audio = call ? call.querySelector("audio.call-recording") : null;
    if (!audio) return;
    playFrom(audio, parseFloat(button.getAttribute("data-seek")) || 0);
  });

  var call = document.querySelector("li[data-call][data-play-from]");
  var audio = call ? call.querySelector("audio.call-recording") : null;
  if (audio) {
    var line = call.querySelector(".transcript-current") || call;
    if (line.scrollIntoView) line.scrollIntoView({ block: "center" });
    playFrom(audio, parseFloat(call.getAttribute("data-play-from")) || 0);
  }
})();
