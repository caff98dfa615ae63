/* The desk's push stream (坐席推送): Server-Sent Events from the push server (agent_desk.push).
 *
 * Each message the server pushes is dispatched on document as the DOM event "desk:<kind>"
 * with the parsed JSON as event.detail; the panels listen for those. #push-state shows the
 * stream's state (data-state: connecting, open, reconnecting, off).
 *
 * The stream needs a push ticket (short-lived, signed): the page comes with one, and this
 * script gets a fresh one from /desk/push-ticket before it expires, then opens a new stream
 * where the last one left off (last_id). A stream that drops is reopened by the browser
 * itself with Last-Event-ID, so nothing pushed meanwhile is missed; one the server refuses
 * (an expired ticket) is reopened here with a new ticket.
 */
(function () {
  "use strict";

  // The kinds of entry the server pushes (agent_desk.feed): EventSource hears a named event
  // only through a listener for that name. A new kind of entry is added here.
  var KINDS = ["pop", "seat", "call", "order", "notice", "board", "map", "live"];
  var RENEW_AT = 0.6; // of a ticket's life
  var RETRY_FIRST_MS = 2000, RETRY_MAX_MS = 30000;

  var indicator = document.getElementById("push-state");
  if (!indicator) {
    return;
  }
  var deskEl = document.getElementById("desk");
  // a wallboard or a case map names its stream on the indicator (data-agent="board", "map")
  var agent = indicator.getAttribute("data-agent") ||
    (deskEl ? deskEl.getAttribute("data-agent") || "" : "");
  var url = indicator.getAttribute("data-url");
  var ticket = indicator.getAttribute("data-ticket");
  var renewPath = indicator.getAttribute("data-renew");
  var ticketSeconds = Number(indicator.getAttribute("data-ticket-seconds")) || 300;
  var source = null;
  var lastId = "";
  var renewTimer = null, retryTimer = null;
  var retryMs = RETRY_FIRST_MS;

  function show(state) {
    indicator.setAttribute("data-state", state);
    indicator.textContent = indicator.getAttribute("data-label-" + state) || state;
  }

  function streamUrl() {
    var query = "agent=" + encodeURIComponent(agent) + "&ticket=" + encodeURIComponent(ticket);
    if (lastId) {
      query += "&last_id=" + encodeURIComponent(lastId);
    }
    return url + "?" + query;
  }

  function deliver(message) {
    if (message.lastEventId) {
      lastId = message.lastEventId;
      indicator.setAttribute("data-last-id", lastId);
    }
    var detail;
    try {
      detail = JSON.parse(message.data);
    } catch (err) {
      return; // not ours to guess at
    }
    document.dispatchEvent(new CustomEvent("desk:" + message.type, { detail: detail }));
  }

  function close() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function open() {
    close();
    clearTimeout(retryTimer);
    show(lastId ? "reconnecting" : "connecting");
    var stream = new EventSource(streamUrl());
    source = stream;
    KINDS.forEach(function (kind) {
      stream.addEventListener(kind, deliver);
    });
    stream.onopen = function () {
      retryMs = RETRY_FIRST_MS;
      show("open");
    };
    stream.onerror = function () {
      if (stream !== source) {
        return;
      }
      if (stream.readyState === EventSource.CLOSED) {
        // refused (the ticket expired, or the server was away): a new ticket, then again
        close();
        show("off");
        retryTimer = setTimeout(renew, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      } else {
        show("reconnecting"); // the browser reopens it with Last-Event-ID
      }
    };
  }

  function scheduleRenewal() {
    clearTimeout(renewTimer);
    renewTimer = setTimeout(renew, ticketSeconds * RENEW_AT * 1000);
  }

  function renew() {
    clearTimeout(retryTimer);
    fetch(renewPath, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (reply) {
        if (!reply.ok) {
          throw new Error("push ticket: HTTP " + reply.status);
        }
        return reply.json();
      })
      .then(function (body) {
        ticket = body.ticket;
        url = body.url || url;
        ticketSeconds = Number(body.expires_in) || ticketSeconds;
        scheduleRenewal();
        open(); // a new stream from where this one is: nothing missed, nothing twice
      })
      .catch(function () {
        close();
        show("off");
        retryTimer = setTimeout(renew, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      });
  }

  if (!url || !ticket || typeof EventSource === "undefined") {
    show("off");
    return;
  }
  scheduleRenewal();
  open();
  window.addEventListener("pagehide", close);
})();
