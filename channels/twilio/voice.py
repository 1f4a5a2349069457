"""Voice calls through Twilio's Calls API: the text is spoken with ``<Say>``."""

from __future__ import annotations

from twilio.twiml.voice_response import Gather, VoiceResponse

from channels.twilio.account import TwilioAccount
from channels.twilio.base import TwilioChannel
from router.model.channel import Rendered
from router.model.outcome import Capabilities, Outcome, Scope

# Twilio accepts at most 4,000 characters of inline TwiML; escaping and the
# repeated <Say> need room, so the spoken text itself stays well below.
TWIML_MAX_LENGTH = 4000
VOICE_MAX_LENGTH = 1500


def build_twiml(
    text: str, *, language: str | None = None, repeat: int = 2, gather_url: str | None = None
) -> str:
    """TwiML that speaks ``text``; VoiceResponse escapes it, so markup is spoken literally.

    With ``gather_url`` the callee can press 1 to acknowledge; Twilio posts the key there.
    """
    response = VoiceResponse()
    say_options = {"language": language} if language else {}
    if gather_url is None:
        response.say(text, loop=repeat, **say_options)
        return str(response)
    gather = Gather(num_digits=1, action=gather_url, method="POST", timeout=8)
    gather.say(f"{text} Press 1 to acknowledge.", loop=repeat, **say_options)
    response.append(gather)
    response.say("No key was pressed. Goodbye.", **say_options)
    return str(response)


class VoiceChannel(TwilioChannel):
    """A phone call that reads the message out."""

    name = "voice"
    capabilities = Capabilities(
        max_length=VOICE_MAX_LENGTH,
        failure_domains=frozenset({"twilio", "carrier"}),
        reports_delivery=True,
        reports_acknowledgement=True,
    )

    def __init__(
        self, account: TwilioAccount, sender: str, *, language: str | None = None, repeat: int = 2
    ) -> None:
        super().__init__(account, sender)
        self._language = language
        self._repeat = repeat

    async def send(self, address: str, message: Rendered, *, attempt_id: str) -> Outcome:
        twiml = self._twiml(message)
        if len(twiml) > TWIML_MAX_LENGTH:
            return Outcome.permanent("spoken text too long for one call", Scope.RECIPIENT)
        return await self._submit(lambda: self._account.client.calls.create_async(
            to=address, from_=self._sender, twiml=twiml, **self._account.callback(attempt_id)
        ))

    def _twiml(self, message: Rendered) -> str:
        gather_url = self._account.gather_url if message.ack_code else None
        return build_twiml(message.text, language=self._language, repeat=self._repeat,
                           gather_url=gather_url)
