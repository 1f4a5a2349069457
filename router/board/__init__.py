"""The crisis board: a live web page, and a JSON API under it, for the people running the
response. ``backchannel serve`` mounts it when the config has a ``[board]`` section.

It reads the store only (a read-only connection of its own on SQLite), learns of changes
from a change cursor (SQLite's data_version, PostgreSQL's NOTIFY), and pushes re-rendered
parts of the page over server-sent events, at most a few per second per view.
"""

from router.board.app import Board
from router.board.views import Planner, Topology

__all__ = ["Board", "Planner", "Topology"]
