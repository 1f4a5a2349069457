"""Telegram Bot API: private messages from a bot, and the updates that come back
(button presses and replies, by long polling or webhook)."""
