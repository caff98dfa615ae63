"""Telephony: the AMI control plane, the directory of queues and agent phones, call state."""
