"""What `easerve bench robustness` reports: one `ScenarioResult` per scenario, shown as a table on
the console and written as JSON (every figure) and markdown (the tables) under the output folder.
Imports nothing heavy."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from easerve.bench.report import TableData

REPORT_NAME = "bench_robustness"
COMPLETED = "completed"
MISSING = "-"

SUMMARY_HEADERS = (
    "scenario",
    "valid lost",
    "attack statuses",
    "peak RSS MB",
    "RSS after MB",
    "worst bystander ms",
    "shutdown lost",
    "outcome",
)

METHOD = """\
Each scenario runs against its own `easerve serve` (a fresh process on a free 127.0.0.1 port,
serving the models the scenarios use from --weights-dir, plus any --serve-arg flags); the
shutdown scenario starts a fresh server for each of its runs. The attack traffic comes from this
process (asyncio: aiohttp clients, and raw sockets where the bytes on the wire matter), on the
same machine. Valid lost: requests that should have succeeded (the scenario's valid traffic, and
the bystanders) answered non-2xx or not at all. Attack statuses: what the scenario's attack
requests got, by HTTP status, or `reset` (the connection closed or reset before an answer),
`timeout` (no answer within the client's limit), `refused` (no connection). Peak RSS: the
server's whole process tree (the process and its descendants, VmRSS from /proc), sampled every
50 ms from readiness to the end of the scenario; RSS after: the same, read after the traffic
ended and the server idled (5 s, 1 s with --quick); a server whose tree passes the --rss-cap-mb
is killed by the bench and the scenario reported as not completed. Bystander: a 64x64 PNG
`/v1/classify` to eamlp-ea-tiny started every 0.5 s during the attack on its own connections,
each its own request (they do not wait for one another); the worst is its send-to-answer time
(a bystander still unanswered at its limit counts as that limit, and lost). Shutdown lost:
requests written on a connection that then closed or reset without an answer, per run; answers
of any status count as answered, failed connects as refused (a client refused after SIGTERM
stops, so refusals count the clients turned away). Each shutdown run: closed-loop keep-alive
clients on `/v1/classify`, SIGTERM after 2 s, the clients stop once the server has exited."""


@dataclass
class ShutdownRun:
    """One run of the shutdown scenario: closed-loop clients, SIGTERM, what became of each request."""

    clients: int
    sent: int = 0  # requests attempted (refused connects included)
    answered: dict[str, int] = field(default_factory=dict)  # HTTP status -> count, whenever sent
    answered_after_sigterm: dict[str, int] = field(default_factory=dict)  # of those sent after SIGTERM
    lost: int = 0  # written, then reset / closed / no answer in time
    refused: int = 0  # connects refused (a client refused after SIGTERM stops: at most one each)
    exit_code: int | None = None  # None: did not exit in time (then killed)
    sigterm_to_exit_s: float | None = None
    first_refusal_after_sigterm_s: float | None = None
    error: str | None = None  # why the run could not complete


@dataclass
class ScenarioResult:
    name: str
    description: str
    outcome: str = COMPLETED  # or why the scenario could not complete
    duration_s: float = 0.0
    valid_sent: int = 0  # bystanders included
    valid_lost: int = 0
    attack_statuses: dict[str, int] = field(default_factory=dict)
    rss_before_mb: float | None = None
    peak_rss_mb: float | None = None
    rss_after_mb: float | None = None
    bystander_sent: int = 0
    bystander_lost: int = 0
    worst_bystander_ms: float | None = None
    shutdown_runs: list[ShutdownRun] | None = None
    target: str = ""  # what a robust server does here
    target_met: bool | None = None  # None: not judged (the scenario did not complete)
    findings: list[str] = field(default_factory=list)  # one line each, for the markdown page
    details: dict[str, Any] = field(default_factory=dict)  # scenario-specific figures
    server_log_tail: str | None = None  # when the server failed

    @property
    def completed(self) -> bool:
        return self.outcome == COMPLETED

    @property
    def shutdown_lost(self) -> list[int] | None:
        return None if self.shutdown_runs is None else [run.lost for run in self.shutdown_runs]

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["completed"] = self.completed
        document["shutdown_lost"] = self.shutdown_lost
        return document


def format_statuses(statuses: Mapping[str, int]) -> str:
    """ "200×12, 413×4", most first; a key seen once shows alone ("ply 500")."""
    if not statuses:
        return MISSING
    ordered = sorted(statuses.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(key if count == 1 else f"{key}×{count}" for key, count in ordered)


def _mb(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def _valid_lost(result: ScenarioResult) -> str:
    if result.shutdown_runs is not None or result.valid_sent == 0:
        return MISSING
    return f"{result.valid_lost}/{result.valid_sent}"


def _shutdown_lost(result: ScenarioResult) -> str:
    if result.shutdown_runs is None:
        return MISSING
    sent = sum(run.sent for run in result.shutdown_runs)
    return f"{' / '.join(str(run.lost) for run in result.shutdown_runs)} (of {sent:,} sent)"


def summary_table(results: list[ScenarioResult]) -> TableData:
    rows = tuple(
        (
            result.name,
            _valid_lost(result),
            format_statuses(result.attack_statuses),
            _mb(result.peak_rss_mb),
            _mb(result.rss_after_mb),
            _ms(result.worst_bystander_ms),
            _shutdown_lost(result),
            result.outcome,
        )
        for result in results
    )
    return TableData("Robustness: per scenario", SUMMARY_HEADERS, rows)


TWIN_HEADERS = (
    "model",
    "attention",
    "input x requests",
    "answers",
    "median / slowest answer s",
    "predicted MB per item",
    "peak RSS over start MB",
    "given back after s",
    "RSS after MB",
    "worst bystander ms",
    "bystanders lost",
)


def _seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def twins_table(results: list[ScenarioResult]) -> TableData | None:
    """EA vs SA twins under the same attack (sa-memory): working memory beside time, one row per
    model; None when no scenario attacked twins. RSS figures are the whole server tree's; "given
    back" is how long after its last answer the tree was back within 150 MB of the scenario's
    start (not within the limit: `-`)."""
    rows = []
    for result in results:
        before = result.rss_before_mb
        for twin in result.details.get("twins", []):
            over = None if before is None else twin["peak_rss_mb"] - before
            rows.append(
                (
                    twin["model"],
                    twin["attention"],
                    f"{twin['input']} x{twin['requests']}",
                    format_statuses(twin["statuses"]),
                    f"{twin['median_answer_s']:.2f} / {twin['slowest_answer_s']:.2f}",
                    _mb(twin["predicted_item_mb"]),
                    _mb(over),
                    _seconds(twin["given_back_s"]),
                    _mb(twin["rss_after_mb"]),
                    _ms(twin["worst_bystander_ms"]),
                    f"{twin['bystanders_lost']}/{twin['bystanders_sent']}",
                )
            )
    if not rows:
        return None
    return TableData("EA vs SA twins: working memory beside time", TWIN_HEADERS, tuple(rows))


def findings_table(results: list[ScenarioResult]) -> TableData:
    rows = tuple(
        (result.name, "; ".join(result.findings) or MISSING) for result in results if result.findings or result.details
    )
    return TableData("Findings", ("scenario", "what happened"), rows)


def target_lines(results: list[ScenarioResult]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "not judged"}
    return [f"{result.name}: {result.target} — {verdicts[result.target_met]}" for result in results if result.target]


def write_json(path: Path, environment: str, machine: str, command: list[str], results: list[ScenarioResult]) -> None:
    document = {
        "benchmark": "robustness",
        "environment": environment,
        "machine": machine,
        "command": command,
        "scenarios": [result.to_json() for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
