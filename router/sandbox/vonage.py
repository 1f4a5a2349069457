"""A Vonage peer: the SMS API (``/sms/json``), the Voice API (``/v1/calls``) and the
account balance (``/account/get-balance``), on one port.

It keeps state like Vonage: an SMS is split into parts, each with its own id and its own
delivery receipt, POSTed signed (``sig``, by the account's signature method) to the
request's ``callback``; a call moves started -> ringing -> answered -> completed, each
event POSTed to its ``event_url`` with a signed JWT; a key press goes to the call's
``input`` action. Requests are authenticated as Vonage does: the API key and secret in
the SMS form and the balance query, an RS256 JWT from the application's private key for
calls. Scripted faults per channel key: ``vonage-sms``, ``vonage-voice`` and
``vonage-account`` (the balance that health probes read).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from router.sandbox import _vonage_api as api
from router.sandbox._http import HttpPeer
from router.sandbox._vonage_api import VonageCall, VonageSms
from router.sandbox.faults import Fault, FaultBook

DEFAULT_API_KEY = "5a4db0c0"
DEFAULT_API_SECRET = "0c7e1a5b9d3f"  # noqa: S105 - the sandbox's own fake credentials
DEFAULT_SIGNATURE_SECRET = "9f1c2b7e4a6d8c0e3b5a7f9d1c3e5a7b"  # noqa: S105
DEFAULT_APPLICATION_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
KINDS = ("http", "rate_limited", "stall", "drop", "reject_recipient", "undelivered", "refuse",
         "partial")
_PROBE_FAULTS = frozenset({"http", "rate_limited", "stall", "drop"})


def new_private_key_pem() -> bytes:
    """A fresh RSA key for the sandbox's voice application (what Vonage's dashboard
    hands out when an application is created)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class VonagePeer(HttpPeer):
    """A local Vonage. ``await peer.start()`` or ``async with VonagePeer() as peer:``."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        *,
        signature_secret: str = DEFAULT_SIGNATURE_SECRET,
        signature_method: str = "sha256",
        application_id: str = DEFAULT_APPLICATION_ID,
        private_key_pem: bytes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        sent_after: float = 0.05,
        delivered_after: float = 0.1,
        call_duration: float = 0.1,
        balance: float = 42.5,
        inbound_url: str | None = None,
    ) -> None:
        faults = FaultBook(("vonage-sms", "vonage-voice", "vonage-account"), KINDS,
                           normalize=lambda number: number.removeprefix("+"))
        super().__init__(faults, host=host, port=port, latency=latency)
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_secret = signature_secret
        self.signature_method = signature_method
        self.application_id = application_id
        self.private_key_pem = private_key_pem or new_private_key_pem()
        self.sent_after, self.delivered_after = sent_after, delivered_after
        self.call_duration = call_duration
        self.balance = balance
        """What the balance probe reads; 0 makes Vonage useless (no credit)."""
        self.inbound_url = inbound_url
        """Where deliver_inbound() posts replies, like a number's inbound webhook."""
        self.sms: list[VonageSms] = []
        self.calls: dict[str, VonageCall] = {}
        self.inbound: list[dict[str, str]] = []
        self._seq = itertools.count(1)
        self._public_key = _public_key(self.private_key_pem)

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def write_private_key(self, path: Path) -> Path:
        """Put the application's private key where a router config can name it."""
        path.write_bytes(self.private_key_pem)
        path.chmod(0o600)
        return path

    # Inspection -------------------------------------------------------------------

    def sent(self, channel: str) -> list[VonageSms] | list[VonageCall]:
        """What the peer took on ``sms`` or ``voice``, oldest first."""
        if channel == "voice":
            return sorted(self.calls.values(), key=lambda call: call.seq)
        return list(self.sms)

    def _sent_json(self) -> list[dict[str, object]]:
        now = self.clock()
        rows: list[dict[str, object]] = [
            {"channel": "sms", "to": m.to, "from": m.from_, "text": m.text, "ids": list(m.ids),
             "client-ref": m.client_ref} for m in self.sms
        ]
        rows += [{"channel": "voice", **call.to_json(now), "spoken": call.spoken()}
                 for call in self.sent("voice") if isinstance(call, VonageCall)]
        return rows

    # Routes -----------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/sms/json", self._send_sms),
            web.get("/account/get-balance", self._get_balance),
            web.post("/v1/calls", self._create_call),
            web.get("/v1/calls/{uuid}", self._get_call),
            web.route("*", "/{tail:.*}", self._not_found),
        ]

    async def _not_found(self, request: web.Request) -> web.Response:
        return api.problem(404, "Not Found", f"{request.path} is not a resource here")

    def _key_ok(self, values: Mapping[str, str]) -> bool:
        return secrets.compare_digest(values.get("api_key", ""), self.api_key) and (
            secrets.compare_digest(values.get("api_secret", ""), self.api_secret))

    async def _get_balance(self, request: web.Request) -> web.Response:
        query = {k: request.query[k] for k in request.query}
        self.tag(request, "vonage-account", {"api_key": query.get("api_key", "")})
        if not self._key_ok(query):
            return web.json_response({"error-code": "401",
                                      "error-code-label": "authentication failed"}, status=401)
        fault = self.faults.take("vonage-account", None, where=lambda f: f.kind in _PROBE_FAULTS)
        if fault is not None:
            if answer := _fault_answer(fault):
                return answer
            await (self.stall(request) if fault.kind == "stall" else self.drop(request))
        return web.json_response({"value": self.balance, "autoReload": False})

    # SMS ----------------------------------------------------------------------------

    async def _send_sms(self, request: web.Request) -> web.Response:
        data = await request.post()
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        shown = {k: v for k, v in form.items() if k != "api_secret"}
        self.tag(request, "vonage-sms", shown)
        form |= _basic_auth(request)  # Vonage's SDK sends the key and secret this way
        if not form.get("api_key") or not form.get("api_secret"):
            return api.sms_error(2, "Missing api_key or api_secret")
        if not self._key_ok(form):
            return api.sms_error(4)
        to, sender, text = form.get("to", ""), form.get("from", ""), form.get("text", "")
        if not to or not sender or not text:
            missing = "to" if not to else "from" if not sender else "text"
            return api.sms_error(2, f"Missing {missing}")
        if not (to.isdigit() and 7 <= len(to) <= 15):
            return api.sms_error(3, "Invalid to address")
        callback = form.get("callback")
        if callback is not None and not callback.startswith(("http://", "https://")):
            return api.sms_error(23)
        if len(form.get("client-ref", "")) > 40:  # "up to 40 characters" (SMS API 1.0.10)
            return api.sms_error(3, "client-ref is too long")
        fault = self.faults.take("vonage-sms", to)
        if fault is not None and (answer := _sms_fault_answer(fault)) is not None:
            return answer
        if self.balance <= 0:
            return api.sms_error(9)
        kind = form.get("type", "text")
        count = api.parts(text, kind)
        message = VonageSms(
            next(self._seq), to, sender, text, kind, form.get("client-ref"), callback,
            tuple(api.message_id() for _ in range(count)), self.clock(),
            failure=(fault.code or 5) if fault is not None and fault.kind == "undelivered"
            else None,
        )
        self.sms.append(message)
        refused_from = 1 if fault is not None and fault.kind == "partial" else count
        entries = []
        for index, part in enumerate(message.ids):
            if index >= refused_from:
                code = fault.code if fault is not None and fault.code else 5
                entries.append({"status": str(code), "error-text": api.SMS_ERRORS.get(code, "")})
                continue
            entry = {"to": to, "message-id": part, "status": "0",
                     "remaining-balance": f"{self.balance:.8f}", "message-price": "0.03330000",
                     "network": "20810"}
            if message.client_ref:
                entry["client-ref"] = message.client_ref
            entries.append(entry)
        if callback:
            self.spawn(self._receipts(message, refused_from))
        if fault is not None and fault.kind == "stall":
            await self.stall(request)
        if fault is not None and fault.kind == "drop":
            await self.drop(request)
        return api.sms_answer(entries)

    async def _receipts(self, message: VonageSms, parts_taken: int) -> None:
        """Every part taken gets its receipts: accepted by the carrier, then delivered
        (or failed with the scripted error code)."""
        assert message.callback is not None
        final = "delivered" if message.failure is None else "failed"
        for when, status in ((self.sent_after, "accepted"),
                             (max(self.delivered_after, self.sent_after), final)):
            await asyncio.sleep(max(0.0, message.born + when - self.clock()))
            for part in message.ids[:parts_taken]:
                params = {
                    "msisdn": message.to, "to": message.from_, "network-code": "20810",
                    "messageId": part, "price": "0.03330000", "status": status, "scts":
                    time.strftime("%y%m%d%H%M", time.gmtime()),
                    "err-code": "0" if status != "failed" else str(message.failure),
                    "api-key": self.api_key, "message-timestamp": api.stamp(),
                }
                if message.client_ref:
                    params["client-ref"] = message.client_ref
                message.receipts.append((part, status))
                await self.post_signed_form(message.callback, params)

    async def post_signed_form(self, url: str, params: Mapping[str, str]) -> int | None:
        """POST an SMS webhook as Vonage does, signed with the account's secret."""
        signed = api.signed_params(params, self.signature_secret, self.signature_method)
        return await self.post_outbound(url, form=signed,
                                        headers={"User-Agent": "Vonage-Sandbox/1.0"})

    async def deliver_inbound(self, msisdn: str, to: str, text: str) -> int | None:
        """A person texts one of our Vonage numbers: POST the signed inbound webhook."""
        if not self.inbound_url:
            raise RuntimeError("set inbound_url first: where should Vonage post replies?")
        params = {
            "msisdn": msisdn.removeprefix("+"), "to": to.removeprefix("+"),
            "messageId": api.message_id(), "text": text, "type": "text",
            "keyword": (text.split() or [""])[0].upper(), "api-key": self.api_key,
            "message-timestamp": api.stamp(),
        }
        self.inbound.append(params)
        return await self.post_signed_form(self.inbound_url, params)

    # Voice --------------------------------------------------------------------------

    def _jwt_ok(self, request: web.Request) -> bool:
        import jwt

        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            claims = jwt.decode(token, self._public_key, algorithms=["RS256"],
                                options={"require": ["iat", "jti", "application_id"]})
        except jwt.PyJWTError:
            return False
        return claims.get("application_id") == self.application_id

    async def _create_call(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        self.tag(request, "vonage-voice", {"body": json.dumps(body)[:500]})
        if not self._jwt_ok(request):
            return api.problem(401, "Unauthorized", "Invalid Token")
        if not isinstance(body, dict):
            return api.problem(400, "Bad Request", "The request body is not a JSON object")
        invalid = _call_problems(body)
        if invalid:
            return api.problem(400, "Bad Request", "Invalid parameters",
                               invalid_parameters=invalid)
        to = str(body["to"][0]["number"])
        fault = self.faults.take("vonage-voice", to)
        if fault is not None and (answer := _call_fault_answer(fault)) is not None:
            return answer
        if self.balance <= 0:
            return api.problem(402, "Low balance", "This request could not be performed due"
                               " to your account balance being low.")
        now = self.clock()
        failed = fault is not None and fault.kind == "undelivered"
        answered = now + max(self.delivered_after, self.sent_after)
        steps: tuple[tuple[float, str], ...] = (
            (now, "started"), (now + self.sent_after, "ringing"),
            (answered, "unanswered" if failed else "answered"))
        if not failed:
            steps += ((answered + self.call_duration, "completed"),)
        events = body.get("event_url")
        call = VonageCall(
            next(self._seq), str(uuid.uuid4()), f"CON-{uuid.uuid4()}", to,
            str(body["from"]["number"]), list(body["ncco"]),
            str(events[0]) if isinstance(events, list) and events else None, now, steps,
        )
        self.calls[call.uuid] = call
        if call.event_url:
            self.spawn(self._call_events(call))
        if fault is not None and fault.kind == "stall":
            await self.stall(request)
        if fault is not None and fault.kind == "drop":
            await self.drop(request)
        return web.json_response({"uuid": call.uuid, "status": "started",
                                  "direction": "outbound",
                                  "conversation_uuid": call.conversation_uuid}, status=201)

    async def _get_call(self, request: web.Request) -> web.Response:
        self.tag(request, "vonage-voice", {})
        if not self._jwt_ok(request):
            return api.problem(401, "Unauthorized", "Invalid Token")
        call = self.calls.get(request.match_info["uuid"])
        if call is None:
            return api.problem(404, "Not Found", "No call with this uuid")
        return web.json_response(call.to_json(self.clock()))

    async def _call_events(self, call: VonageCall) -> None:
        assert call.event_url is not None
        for when, status in call.steps:
            await asyncio.sleep(max(0.0, when - self.clock()))
            event: dict[str, object] = {
                "from": call.from_, "to": call.to, "uuid": call.uuid,
                "conversation_uuid": call.conversation_uuid, "status": status,
                "direction": "outbound", "timestamp": api.iso_now(),
            }
            if status == "completed":
                event |= {"duration": str(round(self.call_duration)), "rate": "0.01000000",
                          "price": "0.00016667", "network": "20810"}
            call.events.append(status)
            await self.post_signed_json(call.event_url, event)

    async def post_signed_json(self, url: str, event: Mapping[str, object]) -> int | None:
        """POST a voice webhook as Vonage does: JSON with a signed bearer JWT."""
        body = json.dumps(event).encode()
        token = api.voice_jwt(body, self.signature_secret, self.api_key, self.application_id)
        return await self.post_outbound(url, form=None, json_body=None, raw=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        })

    async def press_digits(self, call_uuid: str, digits: str) -> int | None:
        """The callee presses keys: POST the ``input`` action's signed event."""
        call = self.calls[call_uuid]
        url = call.input_url()
        if url is None:
            raise ValueError(f"call {call_uuid} has no input action with an eventUrl")
        event = {
            "from": call.from_, "to": call.to, "uuid": call.uuid,
            "conversation_uuid": call.conversation_uuid, "timestamp": api.iso_now(),
            "dtmf": {"digits": digits, "timed_out": False}, "speech": {"results": []},
        }
        return await self.post_signed_json(url, event)

    async def _inbound_json(self, payload: Mapping[str, object]) -> dict[str, object]:
        if "call_uuid" in payload:
            status = await self.press_digits(str(payload["call_uuid"]), str(payload["digits"]))
        else:
            sender, to, text = (str(payload[k]) for k in ("from", "to", "text"))
            status = await self.deliver_inbound(sender, to, text)
        return {"status": status}


def _basic_auth(request: web.Request) -> dict[str, str]:
    """The API key and secret from an ``Authorization: Basic`` header, if any."""
    import base64
    import binascii

    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return {}
    try:
        key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return {}
    return {"api_key": key, "api_secret": secret}


def _public_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(pem, password=None).public_key()


def _call_problems(body: Mapping[str, object]) -> list[dict[str, str]]:
    """What the Voice API's schema refuses in a create-call request (CreateCallRequestNcco)."""
    found: list[dict[str, str]] = []
    to = body.get("to")
    if not isinstance(to, list) or not to or not isinstance(to[0], dict):
        found.append({"name": "to", "reason": "is required"})
    elif to[0].get("type") != "phone" or not str(to[0].get("number", "")).isdigit() or not (
        7 <= len(str(to[0].get("number", ""))) <= 15
    ):
        found.append({"name": "to[0].number", "reason": "must match \\d{7,15}"})
    sender = body.get("from")
    if not isinstance(sender, dict) or not str(sender.get("number", "")).isdigit():
        found.append({"name": "from.number", "reason": "must match \\d{7,15}"})
    ncco = body.get("ncco")
    if not isinstance(ncco, list) or not ncco or not all(isinstance(a, dict) for a in ncco):
        found.append({"name": "ncco", "reason": "must be a non-empty array of actions"})
    else:
        for index, action in enumerate(ncco):
            if action.get("action") == "talk" and len(str(action.get("text", ""))) > 1500:
                found.append({"name": f"ncco[{index}].text", "reason": "is over 1500"})
    events = body.get("event_url")
    if events is not None and (not isinstance(events, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in events)):
        found.append({"name": "event_url", "reason": "must be an array of URLs"})
    return found


def _fault_answer(fault: Fault) -> web.Response | None:
    if fault.kind == "http":
        return api.problem(fault.status, fault.message or "Error")
    if fault.kind == "rate_limited":
        response = api.problem(429, "Too Many Requests")
        response.headers["Retry-After"] = str(fault.retry_after_seconds)
        return response
    return None


def _sms_fault_answer(fault: Fault) -> web.Response | None:
    if fault.kind in ("reject_recipient", "refuse"):
        return api.sms_error(fault.code or 3, fault.message)
    return _fault_answer(fault)


def _call_fault_answer(fault: Fault) -> web.Response | None:
    if fault.kind == "reject_recipient":
        return api.problem(400, "Bad Request", fault.message or "Invalid parameters",
                           invalid_parameters=[{"name": "to[0].number",
                                                "reason": "not a reachable number"}])
    if fault.kind == "refuse":
        return api.problem(fault.status or 403, fault.message or "Forbidden")
    return _fault_answer(fault)
