"""Outbound SMS (短信下发): the outbox's way to the citizen's phone.

`parts` cuts a text into network parts; `gateway` is the provider interface with its two
providers (`twilio`, a Twilio-compatible REST gateway; `smpp`, an SMPP 3.4 SMSC); `outbox` is
the state machine of each message (queued -> sending -> sent | failed | unknown, and its
delivery receipt); `worker` drains the outbox through RQ jobs, in order per phone number.
"""
