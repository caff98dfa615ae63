"""Telephony: the AMI control plane, the directory of queues and agent phones, call state."""

# Each call record inserted keeps its hour's rollup (an ORM hook in telephony.rollups),
# loaded with the room so that no way of adding a CallRecord skips it.
from telephony import rollups as _rollups  # noqa: F401
