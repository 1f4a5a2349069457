"""Row 2: email, one independent message per contact, backchannel against Apprise 2.x.

    python -m bench.apprise_email [--contacts 300] [--runs 3]

Both sides send the same text to the same ``--contacts`` mailboxes through the
same local SMTP peer (its own process), with STARTTLS and AUTH as the sandbox
relay requires; Apprise trusts the peer's certificate through ``SSL_CERT_FILE``
(set to the peer's CA), as backchannel does through ``[email] ca_file``.

- backchannel: ``Router.broadcast`` with the durable store on.
- Apprise, best honest mode for independent per-contact messages: one Apprise
  object holding one ``mailtos://`` URL per contact, one ``notify()``; Apprise
  runs the services in parallel on its thread pool, each with its own SMTP
  connection, TLS handshake and login, and reports a result per service.
- Apprise, one URL listing every recipient (reference only): one session, a
  message per recipient sent one after another, and a single success flag for
  all of them (a failure cannot be traced to a contact), so it is not the same work.

The sides alternate run after run. Messages per second per contact; ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from bench.common import SUBJECT, TEXT, address, median, router_config, router_settings, with_store
from bench.peerproc import Peers, peer_process
from config import Settings
from router import Message, Router


@dataclass(slots=True)
class AppriseComparison:
    contacts: int
    backchannel: list[float] = field(default_factory=list)
    apprise: list[float] = field(default_factory=list)
    apprise_one_url: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median([b / a for b, a in zip(self.backchannel, self.apprise, strict=True)])


def mailto_url(email: dict[str, Any], recipients: list[str]) -> str:
    """Apprise's URL for the sandbox relay, sending to ``recipients``."""
    tls = bool(email.get("starttls")) or bool(email.get("use_tls"))
    scheme = "mailtos" if tls else "mailto"
    user = email.get("username")
    auth = f"{quote(str(user), safe='')}:{quote(str(email['password']), safe='')}@" if user else ""
    query = {
        "from": str(email["sender"]),
        "to": ",".join(recipients),
        "smtp": str(email["host"]),
        "mode": "ssl" if email.get("use_tls") else ("starttls" if tls else "insecure"),
        "format": "text",
    }
    return f"{scheme}://{auth}{email['host']}:{email['port']}?{urlencode(query)}"


def apprise_send(email: dict[str, Any], recipients: list[str], *, one_url: bool) -> int:
    """Send with Apprise (blocking); return how many recipients it reports as sent."""
    import apprise

    notifier = apprise.Apprise()
    urls = [mailto_url(email, recipients)] if one_url else [
        mailto_url(email, [recipient]) for recipient in recipients
    ]
    for url in urls:
        if not notifier.add(url):
            raise RuntimeError("Apprise refused the mailto URL")
    result = notifier.notify(body=TEXT, title=SUBJECT)
    if one_url:
        return len(recipients) if result else 0
    return sum(1 for r in result.results if r.status == apprise.AppriseResultStatus.SUCCESS)


async def backchannel_run(settings: Settings, contacts: int) -> float:
    async with Router(settings) as router:
        started = time.perf_counter()
        result = await router.broadcast(Message(TEXT, subject=SUBJECT), group="all")
        seconds = time.perf_counter() - started
    reached = sum(1 for r in result.results if r.reached)
    if reached != contacts:
        raise RuntimeError(f"backchannel reached {reached} of {contacts}")
    return contacts / seconds


@contextmanager
def trusting(ca_file: str | None) -> Iterator[None]:
    """Apprise builds its TLS context with ``ssl.create_default_context()``, which reads
    OpenSSL's default paths: point them at the peer's CA while Apprise runs."""
    saved = os.environ.get("SSL_CERT_FILE")
    if ca_file:
        os.environ["SSL_CERT_FILE"] = ca_file
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


async def apprise_run(email: dict[str, Any], recipients: list[str], *, one_url: bool) -> float:
    with trusting(email.get("ca_file")):
        started = time.perf_counter()
        sent = await asyncio.to_thread(apprise_send, email, recipients, one_url=one_url)
        seconds = time.perf_counter() - started
    if sent != len(recipients):
        raise RuntimeError(f"Apprise sent {sent} of {len(recipients)}")
    return len(recipients) / seconds


async def compare(peers: Peers, workdir: Path, contacts: int, runs: int) -> AppriseComparison:
    settings = router_settings(router_config(peers.config, "email", contacts, workdir / "x.db"))
    recipients = [str(address("email", i)) for i in range(contacts)]
    email = peers.config["email"]
    result = AppriseComparison(contacts)
    # Warm both up (imports, first TLS contexts) outside the measurement.
    await backchannel_run(with_store(settings, workdir / "apprise-warm.db"), contacts)
    await apprise_run(email, recipients[:10], one_url=False)
    for index in range(runs):
        store = workdir / f"apprise-{index}-{time.monotonic_ns()}.db"
        sides = ["backchannel", "apprise"] if index % 2 == 0 else ["apprise", "backchannel"]
        for side in sides:
            if side == "backchannel":
                result.backchannel.append(
                    await backchannel_run(with_store(settings, store), contacts)
                )
            else:
                result.apprise.append(await apprise_run(email, recipients, one_url=False))
        result.apprise_one_url.append(await apprise_run(email, recipients, one_url=True))
    return result


async def main(contacts: int, runs: int) -> AppriseComparison:
    with tempfile.TemporaryDirectory(prefix="bench-apprise-") as tmp:
        async with peer_process(Path(tmp)) as peers:
            return await compare(peers, Path(tmp), contacts, runs)


def report(row: AppriseComparison) -> str:
    return (
        f"email, {row.contacts} contacts, one message each (STARTTLS + AUTH, peer CA trusted):\n"
        f"  backchannel {median(row.backchannel):.0f}/s, Apprise {median(row.apprise):.1f}/s"
        f" (one URL per contact): {row.ratio:.1f}x\n"
        f"  reference: Apprise with one URL listing every recipient"
        f" {median(row.apprise_one_url):.0f}/s (one session, one success flag for all)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(report(asyncio.run(main(args.contacts, args.runs))))
