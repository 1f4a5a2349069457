"""Settings and the contact book. Imports nothing else of backchannel's."""

from config.contacts import Contact, ContactEntry, make_contact
from config.directory import Directory, DirectorySummary
from config.settings import ConfigError, Settings, load_settings, settings_from_mapping

__all__ = [
    "ConfigError",
    "Contact",
    "ContactEntry",
    "Directory",
    "DirectorySummary",
    "Settings",
    "load_settings",
    "make_contact",
    "settings_from_mapping",
]
