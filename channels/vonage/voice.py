"""Voice calls through Vonage's Voice API (``POST /v1/calls``): the text is spoken with
an NCCO ``talk`` action, and one key is collected with ``input`` when a person must
acknowledge."""

from __future__ import annotations

import time

from channels.vonage.account import VonageAccount
from channels.vonage.sms import digits
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome, Scope

TALK_MAX_LENGTH = 1500
"""Vonage speaks at most 1,500 characters per ``talk`` action."""
VOICE_MAX_LENGTH = 1500
ACK_PROMPT = " Press 1 to acknowledge."


def build_ncco(
    text: str, *, language: str | None = None, repeat: int = 2, input_url: str | None = None
) -> list[dict[str, object]]:
    """The call's script. JSON carries the text as data: markup in it is spoken literally.

    With ``input_url`` the callee can press 1 to acknowledge; Vonage posts the key there.
    """
    talk: dict[str, object] = {"action": "talk", "text": text, "loop": repeat}
    if language:
        talk["language"] = language
    if input_url is None:
        return [talk]
    talk["text"] = text + ACK_PROMPT
    talk["bargeIn"] = True  # a key pressed while it speaks counts
    goodbye: dict[str, object] = {"action": "talk", "text": "No key was pressed. Goodbye."}
    if language:
        goodbye["language"] = language
    return [
        talk,
        {"action": "input", "type": ["dtmf"], "dtmf": {"maxDigits": 1, "timeOut": 8},
         "eventUrl": [input_url], "eventMethod": "POST"},
        goodbye,
    ]


class VonageVoiceChannel:
    """A phone call that reads the message out."""

    name = "voice"
    provider = "vonage"
    capabilities = Capabilities(
        max_length=VOICE_MAX_LENGTH,
        failure_domains=frozenset({"vonage", "carrier"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def __init__(
        self, account: VonageAccount, sender: str, *, language: str | None = None,
        repeat: int = 2,
    ) -> None:
        self._account = account
        self._sender = digits(sender)
        self._language = language
        self._repeat = repeat
        self._url = f"{account.voice_api_base}/v1/calls"

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        events = self._account.voice_events
        ncco = build_ncco(message.text, language=self._language, repeat=self._repeat,
                          input_url=events if message.ack_code else None)
        if any(len(str(action.get("text", ""))) > TALK_MAX_LENGTH for action in ncco):
            return Outcome.permanent("spoken text too long for one call", Scope.RECIPIENT)
        body: dict[str, object] = {
            "to": [{"type": "phone", "number": digits(address)}],
            "from": {"type": "phone", "number": self._sender},
            "ncco": ncco,
        }
        if events:
            body |= {"event_url": [events], "event_method": "POST"}
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {self._account.application_jwt()}"}
        answer, failure = await self._account.call("POST", self._url, body=body, headers=headers)
        if failure is not None:
            return failure
        call = answer.get("uuid")
        if not isinstance(call, str) or not call:
            return Outcome.unknown("Vonage created the call without a uuid").timed(
                time.monotonic() - started)
        return Outcome.accepted(call).timed(time.monotonic() - started)

    async def status_of(self, call: str) -> str | None:
        """The current status of one of our calls; None if Vonage cannot say."""
        headers = {"Authorization": f"Bearer {self._account.application_jwt()}"}
        answer, failure = await self._account.call("GET", f"{self._url}/{call}", headers=headers)
        if failure is not None:
            return None
        status = answer.get("status")
        return status if isinstance(status, str) else None

    async def check(self) -> Outcome:
        return await self._account.check()

    async def aclose(self) -> None:
        """The shared account is closed by whoever opened it."""
