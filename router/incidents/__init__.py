"""Incidents: one thread from the first alert to the all-clear, and a public status page.

:class:`Incidents` (``router.incidents`` on a started router) opens an incident and
broadcasts its first notice, sends updates and the all-clear to exactly those it has
reached, and stops its escalations when it is resolved; :class:`IncidentTimers` reminds
the owner of a promised update that is late; :class:`StatusPage` renders the public page
and feed that ``backchannel serve`` serves and ``status-page export`` writes.
"""

from router.incidents.lifecycle import Incidents, Step
from router.incidents.report import Event, IncidentReport, IncidentResult, Person
from router.incidents.status_page import StatusPage
from router.incidents.timers import IncidentTimers
from router.incidents.web import status_routes

__all__ = [
    "Event",
    "IncidentReport",
    "IncidentResult",
    "IncidentTimers",
    "Incidents",
    "Person",
    "StatusPage",
    "Step",
    "status_routes",
]
