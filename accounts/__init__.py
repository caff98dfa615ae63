"""People and machine clients: accounts, roles, tokens and the audit log."""
