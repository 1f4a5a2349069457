"""Sending: dispatch (a message to its contacts), delivery (a route, attempt by attempt),
escalation, the outbox (ownership and resume) and the probes."""
