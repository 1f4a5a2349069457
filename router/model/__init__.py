"""The words every room shares: outcomes, the channel and inbound protocols, messages,
results, errors, ids, options and the clock. Imports nothing of the router but itself."""
