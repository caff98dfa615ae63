"""Channels (多渠道受理): the citizens' web portal, SMS and Open311 GeoReport v2 intake.

Each channel is an adapter that hands a citizen's report to the tickets service.
"""
