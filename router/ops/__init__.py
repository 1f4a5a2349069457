"""Operator tools on top of the router: reachability, audit, metrics, the dead man's
switch ping, and the queue worker."""
