"""Channels (多渠道受理): the citizens' web portal, SMS and Open311 GeoReport v2 intake.

Each channel is an adapter that hands a citizen's report to the tickets service.
"""

# The survey's SMS step is this room's to send (tickets.surveys.send_sms_with).
from channels import sms as sms

# The close notice follows tickets' order events (tickets.events.subscribe), wired once here.
from channels import notices as notices  # isort: skip
