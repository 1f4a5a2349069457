"""Twilio: one account shared by WhatsApp, SMS and voice, and its inbound side
(webhook signatures, form parsing, status mapping, status fetching)."""
