"""Wiring for the 12319 hotline: configuration, storage engines and the `hotline` command.

The domain lives in the top-level rooms (telephony, ivr, tickets ...); this package only
connects them to the outside world and stays thin.
"""
