"""Vonage: one account behind SMS and voice, and its inbound side (signed delivery
receipts, replies, call events and key presses)."""
