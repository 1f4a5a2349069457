"""Templates, end to end: the real ``backchannel`` command against the sandbox peers.

Per-channel wording reaches each provider as rendered; a missing variable, a
syntax error or a large broadcast without confirmation exits 2 with nothing
sent (the peers saw no request at all); ``--dry-run`` shows the words, the
audience and the SMS cost, and sends nothing.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    BACKCHANNEL,
    assert_no_duplicates,
    assert_nothing_sent,
    clean_env,
    run_cli,
    write_config,
)
from operator_helpers import invoke, offline_config

from config.settings import ConfigError, settings_from_mapping
from config.templates import TemplateEntry
from router.model.errors import BadInput
from router.rules.template_limits import RenderLimits
from router.rules.templates import parse_vars, render_template, render_wording
from router.sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

OUTAGE: dict[str, str] = {
    "text": "{{ site }} is down since {{ since }}. Updates follow.",
    "subject": "[{{ severity | default('major') }}] {{ site }} outage",
    "email": "Hello,\n\n{{ site }} has been down since {{ since }}.\nNext update: {{ next }}.",
    "sms": "{{ site }} DOWN since {{ since }}. Next update {{ next }}.",
    "voice": "Attention. {{ site }} is down since {{ since }}.",
    "telegram": "🔴 {{ site }} down since {{ since }}",
    "whatsapp": "*{{ site }}* down since {{ since }}",
}
VARS = ["--var", "site=Lyon DC", "--var", "since=14:05", "--var", "next=15:00"]
# One contact per channel, so that each provider gets exactly one rendering.
ONE_PER_CHANNEL: dict[str, dict[str, object]] = {
    "wanda": {"phone": "+33612345678", "order": ["whatsapp"]},
    "sam": {"phone": "+14155552671", "order": ["sms"]},
    "vic": {"phone": "+447911123456", "order": ["voice"]},
    "tom": {"telegram": 111111111},
    "eve": {"email": "eve@example.com"},
}


@pytest.fixture
async def sb() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sandbox:
        yield sandbox
        assert_no_duplicates(sandbox)


def config_with(sb: Sandbox, tmp_path: Path, templates: dict[str, Any] | None = None,
                contacts: dict[str, dict[str, object]] | None = None,
                routing: dict[str, Any] | None = None) -> Path:  # fmt: skip
    overrides: dict[str, Any] = {"templates": templates or {"outage": OUTAGE}}
    if routing:
        overrides["routing"] = routing
    return write_config(sb, tmp_path, contacts or ONE_PER_CHANNEL, overrides=overrides)


async def test_each_channel_gets_its_own_wording(sb: Sandbox, tmp_path: Path) -> None:
    config = config_with(sb, tmp_path)

    run = await run_cli("broadcast", "-g", "ops", "--template", "outage", *VARS, "--json",
                        "--config", str(config))  # fmt: skip

    assert run.status == 0, run
    assert {r["contact"]: r["channel"] for r in run.json()["results"]} == {
        "wanda": "whatsapp", "sam": "sms", "vic": "voice", "tom": "telegram", "eve": "email"
    }
    [whatsapp] = sb.twilio.sent("whatsapp")
    assert whatsapp.body == "*Lyon DC* down since 14:05"
    [sms] = sb.twilio.sent("sms")
    assert sms.body == "Lyon DC DOWN since 14:05. Next update 15:00."
    [call] = sb.twilio.sent("voice")
    assert call.twiml is not None
    says = list(ET.fromstring(call.twiml).iter("Say"))
    assert says and {say.text for say in says} == {"Attention. Lyon DC is down since 14:05."}
    [chat] = sb.telegram.sent
    assert chat.text == "🔴 Lyon DC down since 14:05"
    [mail] = sb.smtp.received
    # The default filter fills a variable nobody gave on purpose.
    assert mail.subject == "[major] Lyon DC outage"
    assert "Lyon DC has been down since 14:05." in mail.text
    assert "Next update: 15:00." in mail.text


async def test_text_is_the_fallback_for_channels_without_wording(
    sb: Sandbox, tmp_path: Path
) -> None:
    config = config_with(sb, tmp_path, {"short": {"text": "{{ site }} down"}})

    run = await run_cli("send", "--to", "tom", "-T", "short", "-V", "site=Paris",
                        "--config", str(config))  # fmt: skip

    assert run.status == 0, run
    assert [s.text for s in sb.telegram.sent] == ["Paris down"]


async def test_missing_variable_exits_2_and_sends_nothing(sb: Sandbox, tmp_path: Path) -> None:
    config = config_with(sb, tmp_path)

    runs = await asyncio.gather(
        run_cli("broadcast", "-g", "ops", "--template", "outage", "--var", "site=Lyon",
                "--config", str(config), columns=None),
        run_cli("send", "--to", "tom", "--template", "outage", "--var", "site=Lyon",
                "--var", "since=1", "--config", str(config), columns=None),
    )  # fmt: skip

    for run in runs:
        assert run.status == 2, run
        assert run.stdout == "", run
        assert "Traceback" not in run.stderr, run
    # Fields render in order: text first names 'since', then 'next' in the second run.
    assert "templates.outage.text" in runs[0].stderr and "'since' is undefined" in runs[0].stderr
    assert "--var since=" in runs[0].stderr
    assert "'next' is undefined" in runs[1].stderr, runs[1]
    assert_nothing_sent(sb)


def test_template_mistakes_exit_2_naming_the_template(tmp_path: Path) -> None:
    # Found before any channel opens: run in this process, against no peer at all.
    tom = {"tom": {"telegram": 1}}
    good = offline_config(tmp_path / "good", tom, templates={"outage": OUTAGE})
    broken = offline_config(tmp_path / "broken", tom,
                            templates={"outage": {"text": "ok", "sms": "{{ site }"}})  # fmt: skip
    cases = [
        (["-T", "outage", "--config", str(broken)],
         ("templates.outage.sms", "template syntax error on line 1")),
        (["-T", "nope", "--config", str(good)], ("unknown template 'nope'", "known: outage")),
        (["-T", "outage", *VARS, "-V", "sitee=x", "--config", str(good)],
         ("sitee not used by templates.outage", "it uses next, severity, since, site")),
        (["-T", "outage", "-V", "no-equals", "--config", str(good)], ("--var", "NAME=VALUE")),
        (["hello", "-V", "site=x", "--config", str(good)], ("--var", "needs --template")),
        (["hello", "-T", "outage", "--config", str(good)], ("--template", "drop TEXT")),
        (["--config", str(good)], ("Missing argument", "'text'")),
    ]  # fmt: skip
    for args, needles in cases:
        result = invoke(["send", "--to", "tom", *args])
        assert result.exit_code == 2, (args, result.output, result.stderr)
        for needle in needles:
            assert needle in result.stderr, (needle, result.stderr)
        assert result.stdout == "", result.stdout
    assert not list(tmp_path.glob("*/store.db"))  # no router was even opened


async def test_dry_run_shows_words_audience_and_sms_cost(sb: Sandbox, tmp_path: Path) -> None:
    contacts: dict[str, dict[str, object]] = {
        "alice": {"phone": "+33612345678", "telegram": 111111111, "email": "a@example.com"},
        "bob": {"phone": "+14155552671", "email": "bob@example.com"},
        "carol": {"telegram": 333333333},
    }
    sms = "€" * 80  # 160 septets: exactly one GSM-7 part
    config = config_with(sb, tmp_path, {"outage": {**OUTAGE, "sms": sms}}, contacts)
    await sb.telegram.refuse()  # a dry run does not even probe

    as_json, as_table = await asyncio.gather(
        run_cli("broadcast", "-g", "ops", "-T", "outage", *VARS, "--dry-run", "--json",
                "--config", str(config)),
        run_cli("broadcast", "-g", "ops", "-T", "outage", *VARS, "--dry-run",
                "--config", str(config), columns=None),
    )  # fmt: skip

    assert as_json.status == 0, as_json
    payload = as_json.json()
    assert payload["dry_run"] is True and payload["contacts"] == 3
    channels = {c["channel"]: c for c in payload["channels"]}
    assert list(channels) == ["whatsapp", "telegram", "sms", "voice", "email"]
    assert {name: (c["first_choice"], c["fallback"]) for name, c in channels.items()} == {
        "whatsapp": (2, 0), "telegram": (1, 1), "sms": (0, 2), "voice": (0, 2),
        "email": (0, 2),
    }
    assert channels["sms"]["text"] == sms
    assert channels["sms"]["sms"] == {"encoding": "GSM-7", "units": 160, "segments": 1}
    assert channels["email"]["subject"] == "[major] Lyon DC outage"
    assert channels["telegram"]["text"] == "🔴 Lyon DC down since 14:05"
    assert payload["unreachable"] == []

    assert as_table.status == 0, as_table
    assert "nothing sent" in as_table.stdout
    assert "1 part, GSM-7, 160 characters" in as_table.stdout, as_table
    assert "Subject: [major] Lyon DC outage" in as_table.stdout, as_table
    assert max(len(line) for line in as_table.stdout.splitlines()) <= 80, as_table
    assert_nothing_sent(sb)


async def test_large_broadcast_needs_confirmation(sb: Sandbox, tmp_path: Path) -> None:
    config = config_with(sb, tmp_path, routing={"confirm_above": 3})

    refused, declined = await asyncio.gather(
        run_cli("broadcast", "-g", "ops", "hello", "--config", str(config), columns=None),
        _on_a_terminal(config, answer="n\n"),
    )

    assert refused.status == 2, refused
    assert "5 contacts" in refused.stderr and "routing.confirm_above (3)" in refused.stderr
    assert "--yes" in refused.stderr and "Nothing was sent" in refused.stderr
    assert_nothing_sent(sb)

    assert declined[0] == 2, declined
    assert "not confirmed" in declined[1], declined
    assert_nothing_sent(sb)

    accepted = await run_cli("broadcast", "-g", "ops", "hello", "--yes", "--json",
                             "--config", str(config))  # fmt: skip
    assert accepted.status == 0, accepted
    assert len(accepted.json()["results"]) == 5
    assert sum(len(v) for v in sb.received().values()) == 5


async def _on_a_terminal(config: Path, answer: str) -> tuple[int, str]:
    """Run a broadcast whose standard input is a terminal, and answer its question."""
    leader, follower = os.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            str(BACKCHANNEL), "broadcast", "-g", "ops", "hello", "--config", str(config),
            stdin=follower, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=clean_env(),
        )
        os.write(leader, answer.encode())
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(leader)
        os.close(follower)
    assert "Send to all 5 contacts of group 'ops'?" in err.decode(), err
    return process.returncode or 0, out.decode() + err.decode()


# -- rendering, without a network ---------------------------------------------------------


def test_render_fills_every_field() -> None:
    message = render_template({"outage": TemplateEntry(**OUTAGE)}, "outage",
                              {"site": "Lyon", "since": "9h", "next": "10h", "severity": "P1"})
    assert message.text == "Lyon is down since 9h. Updates follow."
    assert message.subject == "[P1] Lyon outage"
    assert message.render("sms").text == "Lyon DOWN since 9h. Next update 10h."
    assert message.render("telegram").text == "🔴 Lyon down since 9h"
    assert set(message.by_channel) == {"email", "sms", "voice", "telegram", "whatsapp"}


@pytest.mark.parametrize(
    ("fields", "variables", "needle"),
    [
        ({"text": "{{ x.__class__.__mro__ }}"}, {"x": "a"}, "not allowed in a template"),
        ({"text": "hi", "subject": "{{ s }}"}, {"s": "a\nBcc: eve"},
         "subject: once rendered, must be a single line"),
        ({"text": "{{ s }}"}, {"s": "  "}, "text: renders empty"),
        ({"text": "{{ a }}"}, {}, "'a' is undefined"),
    ],
)
def test_render_errors_are_bad_input(
    fields: dict[str, str], variables: dict[str, str], needle: str
) -> None:
    with pytest.raises(BadInput, match=r"templates\.t") as caught:
        render_template({"t": TemplateEntry(**fields)}, "t", variables)
    assert needle in str(caught.value)


def test_an_incident_template_gets_the_incidents_values_and_a_public_text() -> None:
    update = TemplateEntry(
        text="Update on {{ title }} (opened {{ opened_at }}): {{ news }}",
        sms="{{ title }}: {{ news }}",
        public="{% if public_ok is defined %}{{ site }} is still affected.{% endif %}",
    )
    context = {"title": "DB down", "opened_at": "14:05", "site": "Lyon", "severity": "major"}
    found = render_wording({"u": update}, "u", {"news": "failover done", "public_ok": "1"},
                           context=context)
    # The incident's values need no --var; one it leaves unused is no mistake.
    assert found.message.text == "Update on DB down (opened 14:05): failover done"
    assert found.message.render("sms").text == "DB down: failover done"
    assert found.public == "Lyon is still affected."
    assert "public" not in found.message.by_channel  # never sent to anyone
    # A --var of the same name wins; a public field that renders empty publishes nothing.
    found = render_wording({"u": update}, "u", {"news": "n", "title": "Database"},
                           context=context)
    assert found.message.text.startswith("Update on Database") and found.public is None
    with pytest.raises(BadInput, match=r"--var: typo not used by templates\.u"):
        render_wording({"u": update}, "u", {"news": "n", "typo": "x"}, context=context)
    with pytest.raises(BadInput, match="'news' is undefined"):
        render_wording({"u": update}, "u", {}, context=context)


def test_a_plain_broadcast_renders_no_public_field() -> None:
    entry = TemplateEntry(text="{{ site }} down", public="{{ title }}: investigating")
    message = render_template({"t": entry}, "t", {"site": "Lyon"})  # no incident: no title
    assert message.text == "Lyon down" and "public" not in message.by_channel


def test_parse_vars() -> None:
    assert parse_vars(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in (["a"], ["=1"], ["a b=1"], ["a=1", "a=2"]):
        with pytest.raises(BadInput, match="--var"):
            parse_vars(bad)


def test_config_rejects_bad_templates_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"templates": {
            "outage": {"text": "ok", "voice": "{% if x %}never closed"},
            "bad name": {"text": "x"},
            "nowords": {"subject": "s"},
            "typo": {"text": "t", "sms_text": "x"},
        }})  # fmt: skip
    message = str(caught.value)
    assert "templates.outage.voice: template syntax error on line 1" in message
    assert "templates.bad name" in message
    assert "templates.nowords.text: Field required" in message
    assert "templates.typo.sms_text: unknown key" in message


def test_example_templates_render_in_french_and_english() -> None:
    data = tomllib.loads((EXAMPLES / "templates.toml").read_text(encoding="utf-8"))
    settings = settings_from_mapping(data)
    assert {"outage_fr", "outage_en", "resolved_fr", "resolved_en"} <= set(settings.templates)
    variables = {"site": "Lyon", "since": "14:05", "next_update": "15:00", "status_url":
                 "https://status.example.com"}  # fmt: skip
    for name in ("outage_fr", "outage_en"):
        used = {k: v for k, v in variables.items() if k in settings.templates[name].variables()}
        message = render_template(settings.templates, name, used)
        assert "Lyon" in message.text and message.subject
        for channel in ("sms", "voice", "email", "telegram", "whatsapp"):
            assert "Lyon" in message.render(channel).text, (name, channel)
    fr = render_template(settings.templates, "outage_fr", {
        k: v for k, v in variables.items() if k in settings.templates["outage_fr"].variables()})
    assert "panne" in fr.text.lower()


# -- bounds: time and size, with a clear error naming the template ---------------------------

SMALL = RenderLimits(seconds=0.3, characters=10_000)
"""Small bounds keep these fast; the defaults (2 s, 1,000,000 characters) work alike."""

COSTLY = [
    pytest.param("{{ 'x' * 10**8 }}", "100,000,000 characters", id="repeat"),
    pytest.param("{{ [0] * 10**8 }}", "100,000,000", id="repeat-a-list"),
    pytest.param("{{ 10 ** (10 ** 10) }}", "digits", id="power"),
    pytest.param("{% set ns = namespace(s='x') %}{% for i in range(60) %}"
                 "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}", "16,384", id="doubling"),
    pytest.param("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
                 "{% endfor %}", "took longer than 0.3 s", id="nested-loops"),
    pytest.param("{% for a in v %}{% for b in v %}{% for c in v %}{% endfor %}{% endfor %}"
                 "{% endfor %}", "took longer than 0.3 s", id="loops-over-a-variable"),
    pytest.param("{% for a in range(100000) %}{{ v }}{% endfor %}", "renders more than 10,000",
                 id="long-output"),
    pytest.param("{{ 'x'.ljust(10**9) }}", "padded", id="pad-method"),
    pytest.param("{{ 'x'|center(10**9) }}", "padded", id="pad-filter"),
    pytest.param("{{ '{:>999999999}'.format('x') }}", "padded", id="format-width"),
    pytest.param("{{ '%999999999s' % 'x' }}", "padded", id="printf-width"),
    pytest.param("{{ v|replace('', v) }}", "replaced", id="replace-between-every-character"),
    pytest.param("{{ lipsum(100000) }}", "lorem ipsum", id="lipsum"),
    pytest.param("{{ [1]|batch(10**9, 0)|list }}", "a list", id="batch-filler"),
    pytest.param("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself",
                 id="recursion"),
]


@pytest.mark.parametrize(("source", "needle"), COSTLY)
def test_costly_templates_are_stopped_naming_the_template(source: str, needle: str) -> None:
    template = {"outage": TemplateEntry(text=source)}
    with pytest.raises(BadInput) as caught:
        render_template(template, "outage", {"v": "y" * 1000} if "v" in source else {},
                        limits=SMALL)  # fmt: skip
    assert str(caught.value).startswith("templates.outage.text: "), caught.value
    assert needle in str(caught.value), caught.value


def test_ordinary_templates_render_within_the_bounds() -> None:
    source = ("{{ site|upper }}: {{ '%.1f'|format(load|float) }} load, "
              "{{ (free|int)|filesizeformat }} free, {{ '-' * 10 }} {{ 2 ** 10 }} "
              "{% for n in range(3) %}{{ n }}{% endfor %} {{ ', '.join(['a', 'b']) }}")
    message = render_template({"t": TemplateEntry(text=source)}, "t",
                              {"site": "lyon", "load": "3.14", "free": "5000000000"},
                              limits=SMALL)  # fmt: skip
    assert message.text == "LYON: 3.1 load, 5.0 GB free, ---------- 1024 012 a, b"


def test_a_variable_longer_than_the_bound_is_refused() -> None:
    with pytest.raises(BadInput, match="--var v: longer than 10,000 characters"):
        render_template({"t": TemplateEntry(text="{{ v }}")}, "t", {"v": "y" * 10_001},
                        limits=SMALL)  # fmt: skip


def test_a_costly_template_exits_2_through_the_command(tmp_path: Path) -> None:
    config = offline_config(tmp_path, {"alice": {"telegram": 1}},
                            templates={"boom": {"text": "{{ 'x' * 10**8 }}"}})  # fmt: skip
    result = invoke(["send", "--to", "alice", "--template", "boom", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "templates.boom.text: would build" in result.output
    assert not (tmp_path / "store.db").exists()  # refused before the store was opened
