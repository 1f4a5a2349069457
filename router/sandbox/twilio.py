"""A Twilio REST API peer: Messages, Calls and Account resources under /2010-04-01.

It keeps state like Twilio (a client reads back what it wrote, statuses move over
time), checks Basic auth on every call, answers Twilio's error codes, posts signed
status callbacks and inbound-message webhooks, and injects scripted faults per
channel key: "whatsapp" (To starts with ``whatsapp:``), "sms", "voice" (Calls), and
"account" for the account fetch that health probes use (http, rate_limited, stall or
drop), which all three channels share.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Literal, overload

from aiohttp import web
from twilio.request_validator import RequestValidator

from router.sandbox import _twilio_api as api
from router.sandbox import _twilio_model as model
from router.sandbox._http import HttpPeer
from router.sandbox._ratelimit import SlidingWindow
from router.sandbox._twilio_model import Timeline, TwilioCall, TwilioMessage
from router.sandbox.faults import FAULT_KINDS, Fault, FaultBook

DEFAULT_ACCOUNT_SID = "AC" + "5a4db0c0" * 4
DEFAULT_AUTH_TOKEN = "0c7e1a5b" * 4
_PROBE_FAULTS = frozenset({"http", "rate_limited", "stall", "drop"})
_CALL_EVENTS = {"queued": "initiated", "ringing": "ringing", "in-progress": "answered"}


class TwilioPeer(HttpPeer):
    """A local Twilio. ``await peer.start()`` or ``async with TwilioPeer() as peer:``.

    Timing: a message is ``queued``, ``sent`` after ``sent_after`` seconds and
    ``delivered`` after ``delivered_after``; a call is ``queued``, ``ringing`` after
    ``sent_after``, ``in-progress`` after ``delivered_after`` and ``completed``
    ``call_duration`` later. ``sender_rate`` (messages per second per From, off by
    default) answers 429 beyond it. ``whatsapp_window`` (seconds, off by default) fails
    free-form WhatsApp text with 63016 unless the recipient wrote in within it.
    """

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        sent_after: float = 0.05,
        delivered_after: float = 0.1,
        call_duration: float = 0.1,
        inbound_url: str | None = None,
        sender_rate: int | None = None,
        whatsapp_window: float | None = None,
    ) -> None:
        faults = FaultBook(
            ("sms", "whatsapp", "voice", "account"), FAULT_KINDS - {"smtp", "refuse", "partial"},
            normalize=api.bare,
        )
        super().__init__(faults, host=host, port=port, latency=latency)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.timing = model.Timing(sent_after, delivered_after, call_duration)
        """Status timing of new messages and calls; replace it to change the pace."""
        self.inbound_url = inbound_url
        """Where deliver_inbound() posts replies, like a number's messaging webhook."""
        self.whatsapp_window = whatsapp_window
        self.messages: dict[str, TwilioMessage] = {}
        self.calls: dict[str, TwilioCall] = {}
        self.rate_limited_count = 0
        self._validator = RequestValidator(auth_token)
        self._sender_limit = SlidingWindow(sender_rate) if sender_rate else None
        self._seq = itertools.count(1)
        self._opened = model.now_utc()
        self._last_inbound: dict[str, float] = {}

    @staticmethod
    def clock() -> float:
        """The monotonic clock that statuses follow."""
        return time.monotonic()

    # Inspection -------------------------------------------------------------------

    @overload
    def sent(self, channel: Literal["voice"]) -> list[TwilioCall]: ...
    @overload
    def sent(self, channel: Literal["sms", "whatsapp"]) -> list[TwilioMessage]: ...
    @overload
    def sent(self, channel: str) -> list[TwilioMessage] | list[TwilioCall]: ...
    def sent(self, channel: str) -> list[TwilioMessage] | list[TwilioCall]:
        """What the peer recorded as sent on a channel key, oldest first."""
        if channel == "voice":
            return list(self.calls.values())
        return [
            m for m in self.messages.values() if m.channel == channel and m.direction != "inbound"
        ]

    def status(self, sid: str) -> str:
        """The current status of a message or call."""
        record = self.messages.get(sid) or self.calls.get(sid)
        if record is None:
            raise KeyError(sid)
        return record.status(self.clock())

    def render(self, record: TwilioMessage | TwilioCall) -> dict[str, object]:
        """The resource as the API shows it now."""
        if isinstance(record, TwilioCall):
            return model.call_json(record, self.account_sid, self.clock())
        return model.message_json(record, self.account_sid, self.clock())

    def _sent_json(self) -> list[dict[str, object]]:
        records: list[TwilioMessage | TwilioCall] = [*self.sent("whatsapp"), *self.sent("sms")]
        records += self.sent("voice")
        records.sort(key=lambda r: r.seq)
        return [{"channel": r.channel, **self.render(r)} for r in records]

    # Routes -----------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        base = "/2010-04-01/Accounts/{account}"
        return [
            web.get(base + ".json", self._fetch_account),
            web.post(base + "/Messages.json", self._create_message),
            web.get(base + "/Messages.json", self._list_messages),
            web.get(base + "/Messages/{sid}.json", self._fetch_message),
            web.post(base + "/Calls.json", self._create_call),
            web.get(base + "/Calls.json", self._list_calls),
            web.get(base + "/Calls/{sid}.json", self._fetch_call),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    def _deny(self, request: web.Request) -> web.Response | None:
        """401 unless Basic auth carries our credentials; 404 for another account."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        if scheme.lower() != "basic" or not (
            secrets.compare_digest(user, self.account_sid)
            and secrets.compare_digest(password, self.auth_token)
        ):
            response = api.error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if request.match_info.get("account", self.account_sid) != self.account_sid:
            return api.not_found(request)
        return None

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._deny(request) or api.not_found(request)

    async def _fetch_account(self, request: web.Request) -> web.Response:
        self.tag(request, "account", {})
        if denied := self._deny(request):
            return denied
        fault = self.faults.take("account", None, where=lambda f: f.kind in _PROBE_FAULTS)
        if fault is not None:
            if answer := api.fault_answer(fault, ""):
                return answer
            await (self.stall(request) if fault.kind == "stall" else self.drop(request))
        return web.json_response(
            model.account_json(self.account_sid, self._opened, "backchannel sandbox")
        )

    async def _fetch_message(self, request: web.Request) -> web.Response:
        return self._fetch(request, self.messages.get(request.match_info["sid"]))

    async def _fetch_call(self, request: web.Request) -> web.Response:
        return self._fetch(request, self.calls.get(request.match_info["sid"]))

    def _fetch(
        self, request: web.Request, record: TwilioMessage | TwilioCall | None
    ) -> web.Response:
        self.tag(request, "" if record is None else record.channel, {})
        if denied := self._deny(request):
            return denied
        return api.not_found(request) if record is None else web.json_response(self.render(record))

    async def _list_messages(self, request: web.Request) -> web.Response:
        return self._list(request, list(self.messages.values()), "messages")

    async def _list_calls(self, request: web.Request) -> web.Response:
        return self._list(request, list(self.calls.values()), "calls")

    def _list(self, request: web.Request, records: list[model.R], key: str) -> web.Response:
        query = {k: request.query[k] for k in request.query}
        self.tag(request, "", query)
        if denied := self._deny(request):
            return denied
        filters = ("To", "From", "DateSent", "DateSent>", "DateSent<")
        try:
            chosen, envelope = model.page(
                model.filter_records(records, query),
                query,
                path=request.path,
                key=key,
                filters=filters,
            )
        except ValueError as exc:
            return api.error(400, 20001, str(exc))
        envelope[key] = [self.render(r) for r in chosen]
        return web.json_response(envelope)

    # Creating messages and calls ------------------------------------------------

    async def _create_message(self, request: web.Request) -> web.Response:
        form = await api.read_form(request)
        to = form.get("To", "")
        channel = "whatsapp" if to.startswith("whatsapp:") else "sms"
        self.tag(request, channel, form)
        if denied := self._deny(request):
            return denied
        if problem := api.message_problem(form):
            return api.error(400, *problem)
        fault = self.faults.take(channel, to)
        if fault is not None and (answer := api.fault_answer(fault, to)) is not None:
            return answer
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        if throttled := self._throttle(sender):
            return throttled
        message = self._new_message(form, channel, fault)
        return await self._answer_created(request, fault, self.render(message))

    async def _create_call(self, request: web.Request) -> web.Response:
        form = await api.read_form(request)
        to = form.get("To", "")
        self.tag(request, "voice", form)
        if denied := self._deny(request):
            return denied
        if problem := api.call_problem(form):
            return api.error(400, *problem)
        fault = self.faults.take("voice", to)
        if fault is not None and (answer := api.fault_answer(fault, to)) is not None:
            return answer
        call = self._new_call(form, fault)
        return await self._answer_created(request, fault, self.render(call))

    async def _answer_created(
        self, request: web.Request, fault: Fault | None, body: dict[str, object]
    ) -> web.Response:
        if fault is not None and fault.kind == "stall":
            await self.stall(request)
        if fault is not None and fault.kind == "drop":
            await self.drop(request)
        return web.json_response(body, status=201)

    def _throttle(self, sender: str) -> web.Response | None:
        if self._sender_limit is None:
            return None
        now = self.clock()
        wait = self._sender_limit.wait(sender, now)
        if wait > 0:
            self.rate_limited_count += 1
            return api.rate_limited(max(1, int(wait + 0.999)))
        self._sender_limit.record(sender, now)
        return None

    def _new_message(
        self, form: Mapping[str, str], channel: str, fault: Fault | None
    ) -> TwilioMessage:
        t0 = self.clock()
        code = fault.code if fault is not None and fault.kind == "undelivered" else None
        text = fault.message if fault is not None else ""
        if code is None and self._outside_window(channel, form):
            code = 63016
        message = TwilioMessage(
            sid="SM" + uuid.uuid4().hex,
            seq=next(self._seq),
            channel=channel,
            direction="outbound-api",
            to=form["To"],
            from_=form.get("From"),
            body=form.get("Body", ""),
            created=model.now_utc(),
            born=t0,
            timeline=self.timing.message(t0, code),
            error_code=code,
            error_message=(text or model.UNDELIVERED_TEXT.get(code, "")) if code else None,
            status_callback=form.get("StatusCallback"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            content_sid=form.get("ContentSid"),
            content_variables=form.get("ContentVariables"),
        )
        self.messages[message.sid] = message
        if message.status_callback:
            self.spawn(self._callbacks(message, message.status_callback))
        return message

    def _outside_window(self, channel: str, form: Mapping[str, str]) -> bool:
        if self.whatsapp_window is None or channel != "whatsapp" or form.get("ContentSid"):
            return False
        last = self._last_inbound.get(api.bare(form["To"]))
        return last is None or self.clock() - last > self.whatsapp_window

    def _new_call(self, form: Mapping[str, str], fault: Fault | None) -> TwilioCall:
        t0 = self.clock()
        code = fault.code if fault is not None and fault.kind == "undelivered" else None
        events = tuple(form.get("StatusCallbackEvent", "completed").split())
        call = TwilioCall(
            sid="CA" + uuid.uuid4().hex,
            seq=next(self._seq),
            to=form["To"],
            from_=form["From"],
            twiml=form.get("Twiml"),
            url=form.get("Url"),
            created=model.now_utc(),
            born=t0,
            timeline=self.timing.call(t0, failed=code is not None),
            error_code=code,
            status_callback=form.get("StatusCallback"),
            status_callback_events=events,
        )
        self.calls[call.sid] = call
        if call.status_callback:
            self.spawn(self._callbacks(call, call.status_callback))
        return call

    # Webhooks ---------------------------------------------------------------------

    async def post_signed(self, url: str, params: Mapping[str, str]) -> int | None:
        """POST form ``params`` to ``url`` as Twilio does, with ``X-Twilio-Signature``."""
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, dict(params)),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "User-Agent": "TwilioProxy/1.1",
        }
        return await self.post_outbound(url, form=params, headers=headers)

    async def _callbacks(self, record: TwilioMessage | TwilioCall, url: str) -> None:
        for number, (when, status) in enumerate(record.timeline.steps):
            if isinstance(record, TwilioMessage) and status == "queued":
                continue  # Twilio reports from "sent" on; the create answer said queued
            event = _CALL_EVENTS.get(status, "completed")
            if isinstance(record, TwilioCall) and event not in record.status_callback_events:
                continue
            await asyncio.sleep(max(0.0, when - self.clock()))
            params = api.status_params(
                self.account_sid, record, status, number, round(self.timing.call_duration)
            )
            await self.post_signed(url, params)

    async def deliver_inbound(self, from_: str, to: str, body: str) -> int | None:
        """A person replies: store the inbound message and POST Twilio's signed
        webhook to ``inbound_url``. Returns the application's HTTP status (None if
        it did not answer); the attempt is also in ``outbound``."""
        if not self.inbound_url:
            raise RuntimeError("set inbound_url first: where should Twilio post replies?")
        t0 = self.clock()
        channel = "whatsapp" if from_.startswith("whatsapp:") else "sms"
        message = TwilioMessage(
            "SM" + uuid.uuid4().hex, next(self._seq), channel, "inbound", to, from_, body,
            model.now_utc(), t0, Timeline(((t0, "received"),)),
        )  # fmt: skip
        self.messages[message.sid] = message
        self._last_inbound[api.bare(from_)] = t0
        params = api.inbound_params(self.account_sid, message)
        return await self.post_signed(self.inbound_url, params)

    async def press_digits(self, call_sid: str, digits: str) -> int | None:
        """The callee presses keys: POST the call's ``<Gather action>`` like Twilio."""
        call = self.calls[call_sid]
        action = api.gather_action(call.twiml or "")
        if action is None:
            raise ValueError(f"call {call_sid} has no <Gather> with an absolute action URL")
        params = api.call_callback(call, "in-progress") | {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "Digits": digits,
            "FinishedOnKey": "", "From": call.from_, "To": call.to,
        }  # fmt: skip
        return await self.post_signed(action, params)

    async def _inbound_json(self, payload: Mapping[str, object]) -> dict[str, object]:
        if "call_sid" in payload:
            status = await self.press_digits(str(payload["call_sid"]), str(payload["digits"]))
        else:
            sender, to, body = (str(payload[k]) for k in ("from", "to", "body"))
            status = await self.deliver_inbound(sender, to, body)
        return {"status": status}
