"""Pure decisions: routing and planning, health (breakers), rate limits, templates and
SMS segments. No provider calls here; the store only where a limit is shared."""
