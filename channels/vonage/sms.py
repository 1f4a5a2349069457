"""SMS through Vonage's SMS API (``POST /sms/json``)."""

from __future__ import annotations

import time
from functools import lru_cache
from urllib.parse import quote_plus, urlencode

from channels.vonage.account import SmsRefused, VonageAccount, classify
from router.model.channel import Rendered, text_with_ack
from router.model.gsm import is_gsm7
from router.model.outcome import Capabilities, Outcome

# As for Twilio: a text that fits one SMS provider fits the other.
SMS_MAX_LENGTH = 1600


def digits(number: str) -> str:
    """Vonage writes numbers in E.164 without the ``+``."""
    return number.removeprefix("+")


class VonageSmsChannel:
    """Plain text messages to a mobile number, from a Vonage number or sender id."""

    name = "sms"
    provider = "vonage"
    capabilities = Capabilities(
        max_length=SMS_MAX_LENGTH,
        failure_domains=frozenset({"vonage", "carrier"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def __init__(self, account: VonageAccount, sender: str) -> None:
        self._account = account
        self._sender = digits(sender)
        self._url = f"{account.api_base}/sms/json"
        # What every request shares, form-encoded once: a broadcast pays only for the
        # recipient, the attempt id and (once per text) the words.
        fixed = {**account.credentials(), "from": self._sender}
        if account.sms_callback:
            fixed["callback"] = account.sms_callback
        self._fixed = urlencode(fixed)

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        # Our attempt id (client-ref) comes back in every part's delivery receipt, so a
        # receipt finds its attempt even when the answer to this request was lost.
        body = (f"{self._fixed}&to={digits(address)}&client-ref={quote_plus(attempt_id)}"
                f"&{_words(text_with_ack(message))}")
        started = time.monotonic()
        answer, failure = await self._account.call(
            "POST", self._url, form=body.encode(), headers=_FORM
        )
        if failure is not None:
            return failure
        return self._account.scrub(_parts(answer).timed(time.monotonic() - started))

    async def check(self) -> Outcome:
        return await self._account.check()

    async def aclose(self) -> None:
        """The shared account is closed by whoever opened it."""


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@lru_cache(maxsize=64)
def _words(text: str) -> str:
    """The text, form-encoded, as ``unicode`` when GSM-7 cannot carry it (a broadcast
    sends the same words to everyone: encoded once)."""
    encoded = "text=" + quote_plus(text)
    return encoded if is_gsm7(text) else encoded + "&type=unicode"


def _parts(answer: dict[str, object]) -> Outcome:
    """Accepted only if every part was: a long text answers one entry per part."""
    entries = answer.get("messages")
    if not isinstance(entries, list) or not entries:
        return Outcome.unknown("Vonage answered without a messages list")
    statuses = [str(entry.get("status", "")) if isinstance(entry, dict) else ""
                for entry in entries]
    taken = [entry for entry, status in zip(entries, statuses, strict=True) if status == "0"]
    if len(taken) == len(entries):
        first = taken[0].get("message-id")
        return Outcome.accepted(str(first) if first else None,
                                detail=f"{len(entries)} parts" if len(entries) > 1 else "")
    refused = next(entry for entry, status in zip(entries, statuses, strict=True)
                   if status != "0")
    code_text = str(refused.get("status", "")) if isinstance(refused, dict) else ""
    code = int(code_text) if code_text.isdigit() else -1
    text = str(refused.get("error-text", "")) if isinstance(refused, dict) else ""
    return classify(SmsRefused(code, text, accepted=len(taken), parts=len(entries)))
