"""Email through an SMTP relay."""
