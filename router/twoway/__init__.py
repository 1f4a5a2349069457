"""What comes back, whatever the provider: receipts, replies, acknowledgements and
opt-outs, the polling loops and the background services that run them."""
