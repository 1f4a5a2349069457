"""The reachability run as a node_exporter textfile (Prometheus text format).

Written with prometheus-client's ``write_to_textfile``, which writes a temporary
file and renames it: node_exporter never reads half a file.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from router.ops.reachability import Reach, ReachabilityReport


def reachability_registry(report: ReachabilityReport) -> CollectorRegistry:
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    up = gauge("backchannel_channel_up", "1 when the channel (and what it depends on) is up.",
               ("channel",))  # fmt: skip
    probe_ok = gauge("backchannel_probe_success", "1 when the probe succeeded.", ("probe",))
    latency = gauge("backchannel_probe_latency_seconds", "Duration of the last probe.", ("probe",))
    for row in report.channels:
        up.labels(row.name).set(1 if row.up else 0)
        if row.probe is not None:
            probe_ok.labels(row.name).set(1 if row.probe.ok else 0)
            latency.labels(row.name).set(row.latency if row.latency is not None
                                         else row.probe.elapsed)  # fmt: skip
    unreachable = report.count(Reach.UNREACHABLE)
    for name, doc, value in (
        ("backchannel_contacts", "Contacts checked.", len(report.contacts)),
        ("backchannel_contacts_reachable", "Contacts reachable on at least one channel.",
         len(report.contacts) - unreachable),
        ("backchannel_contacts_redundant",
         "Contacts reachable on two channels that share no failure domain.",
         report.count(Reach.REDUNDANT)),
        ("backchannel_contacts_single_domain",
         "Contacts reachable, but only through one failure domain.",
         report.count(Reach.SINGLE_DOMAIN)),
        ("backchannel_contacts_unreachable", "Contacts reachable on no channel.", unreachable),
        ("backchannel_reachability_exit_status", "Exit status of the run (0 all redundant).",
         report.exit_status),
        ("backchannel_reachability_last_run_timestamp_seconds", "When the run finished.",
         report.finished_at),
        ("backchannel_reachability_duration_seconds", "How long the run took.",
         report.finished_at - report.started_at),
    ):  # fmt: skip
        gauge(name, doc).set(value)
    independent = gauge("backchannel_contact_independent_channels",
                        "Reachable channels that pairwise share no failure domain.",
                        ("contact",))  # fmt: skip
    for contact in report.contacts:
        independent.labels(contact.contact).set(len(contact.independent))
    if report.send_test:
        tested = gauge("backchannel_test_accepted", "Test messages the provider accepted.",
                       ("channel",))  # fmt: skip
        failed = gauge("backchannel_test_failed", "Test messages that did not go through.",
                       ("channel",))  # fmt: skip
        for contact in report.contacts:
            for check in contact.checks:
                if check.test is not None:
                    (tested if check.test.ok else failed).labels(check.channel).inc()
                    (failed if check.test.ok else tested).labels(check.channel).inc(0)
    return registry


def write_metrics(report: ReachabilityReport, path: Path) -> None:
    """Write the textfile atomically; OSError if the directory cannot take it."""
    write_to_textfile(str(path), reachability_registry(report))
