"""What `easerve bench serve` found: its tables, target checks and plot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from easerve.artifacts.tasks import CLASSIFICATION, SEGMENTATION
from easerve.bench.report import TableData, print_table
from easerve.bench.serve_load import RAW, TRANSPORTS, LoadRun
from easerve.bench.serve_offline import OfflineFigures
from easerve.bench.serve_peers import PEER_TRANSPORT, PEERS

# The servers compared, in table order: key -> label. "dynamic" is easerve with dynamic batching
# and one HTTP process; `server_labels` adds one more such server per other --http-workers count.
DYNAMIC, BATCH1, NAIVE = "dynamic", "batch1", "naive"
SERVER_LABELS = {
    DYNAMIC: "easerve (dynamic batching)",
    BATCH1: "easerve, max batch 1",
    NAIVE: "naive FastAPI + onnxruntime",
    **{peer.key: peer.label for peer in PEERS.values()},
}
WORKERS_SUFFIX = "-http-workers-"
# The service / offline ceiling at saturation, by task; other tasks: DEFAULT_MIN_CEILING_RATIO.
MIN_CEILING_RATIO = {CLASSIFICATION.name: 0.7, SEGMENTATION.name: 0.85}
DEFAULT_MIN_CEILING_RATIO = 0.85
MIN_SPEEDUP_OVER_NAIVE = 2.0
SPEEDUP_CONCURRENCIES = (32, 64)
MAX_OVERHEAD_MS = 1.0
# Server CPU per request of easerve (dynamic batching), checked at one concurrency for the models
# of these tasks, in every transport (one not measured shows as such).
MAX_SERVER_CPU_MS = 1.0
CPU_CONCURRENCY = 32
CPU_TARGET_TASKS = (CLASSIFICATION.name,)
PERCENTILES = (50, 95, 99)


def dynamic_server(http_workers: int) -> str:
    """The key of easerve with dynamic batching behind `http_workers` HTTP processes
    (`easerve serve --http-workers`); "dynamic" for one."""
    return DYNAMIC if http_workers == 1 else f"{DYNAMIC}{WORKERS_SUFFIX}{http_workers}"


def http_workers_of(server: str) -> int:
    """The HTTP worker processes of the server `server` (a key of `server_labels`): 1 but for the
    extra dynamic-batching servers."""
    prefix = f"{DYNAMIC}{WORKERS_SUFFIX}"
    return int(server.removeprefix(prefix)) if server.startswith(prefix) else 1


def worker_counts(http_workers: Iterable[int]) -> list[int]:
    """The --http-workers counts measured, in order: 1 (the "dynamic" server) first, then the
    others as given, each once."""
    return list(dict.fromkeys([1, *http_workers]))


def server_label(server: str) -> str:
    workers = http_workers_of(server)
    return SERVER_LABELS[server] if workers == 1 else f"easerve (dynamic batching, {workers} HTTP workers)"


def server_labels(http_workers: Iterable[int] = (1,), peers: Iterable[str] = ()) -> dict[str, str]:
    """The servers a run measures, in the order they run and are tabled: key -> label. Easerve
    with dynamic batching once per worker count (1 always, first), then max batch 1 and the naive
    server (both with one HTTP process), then the `peers` (keys of `serve_peers.PEERS`)."""
    dynamic = [dynamic_server(workers) for workers in worker_counts(http_workers)]
    return {server: server_label(server) for server in [*dynamic, BATCH1, NAIVE, *peers]}


@dataclass(frozen=True)
class Target:
    description: str
    value: str  # "-" where what it needs was not measured
    met: bool | None


@dataclass(frozen=True)
class ModelResults:
    name: str
    task: str
    offline: OfflineFigures
    # (server key, transport) -> one run per concurrency, in the same order
    runs: dict[tuple[str, str], list[LoadRun]]

    @property
    def transports(self) -> list[str]:
        """The transports measured, in the order they ran."""
        return list(dict.fromkeys(transport for _, transport in self.runs))

    @property
    def servers(self) -> list[str]:
        """The servers measured, in the order they ran."""
        return list(dict.fromkeys(server for server, _ in self.runs))

    @property
    def http_workers(self) -> list[int]:
        """The HTTP worker counts of the dynamic-batching servers measured, in the order they ran."""
        return [http_workers_of(server) for server in self.servers if server.startswith(DYNAMIC)]

    @property
    def concurrencies(self) -> list[int]:
        """The concurrencies measured, in the order they ran."""
        return list(dict.fromkeys(run.concurrency for runs in self.runs.values() for run in runs))

    def at(self, server: str, concurrency: int, transport: str = RAW) -> LoadRun | None:
        runs = self.runs.get((server, transport), [])
        return next((run for run in runs if run.concurrency == concurrency), None)

    def saturation(self, transport: str = RAW) -> LoadRun | None:
        """The dynamic-batching run with the highest throughput in `transport`; None if none ran."""
        return max(self.runs.get(("dynamic", transport), []), key=lambda run: run.throughput, default=None)

    def ceiling_ratio(self, transport: str = RAW) -> float | None:
        """The throughput at saturation over the offline ceiling."""
        best = self.saturation(transport)
        if best is None or self.offline.ceiling_per_s <= 0:
            return None
        return best.throughput / self.offline.ceiling_per_s

    def speedup_over_naive(self, concurrency: int, server: str = "dynamic", transport: str = RAW) -> float | None:
        """`server`'s throughput over the naive server's at `concurrency`, both in `transport`."""
        ours, naive = self.at(server, concurrency, transport), self.at("naive", concurrency, transport)
        if ours is None or naive is None or naive.throughput == 0:
            return None
        return ours.throughput / naive.throughput

    def overhead_ms(self, transport: str = RAW) -> float | None:
        """Median latency of a lone client minus the bare pipeline's."""
        lone = self.at("dynamic", 1, transport)
        p50 = lone.percentile_ms(50) if lone is not None else None
        return None if p50 is None else p50 - self.offline.pipeline_ms

    def server_cpu_ms(self, concurrency: int, server: str = "dynamic", transport: str = RAW) -> float | None:
        """`server`'s CPU ms per request answered at `concurrency` in `transport`."""
        run = self.at(server, concurrency, transport)
        return None if run is None else run.server_cpu_ms_per_request


def load_table(results: ModelResults) -> TableData:
    """Per concurrency, transport (a column when more than one was measured) and server:
    throughput, latency percentiles, mean batch size, the server's CPU per request, the
    throughput over the naive server's at the same concurrency and transport, and the failed
    requests."""
    several = len(results.transports) > 1
    rows = []
    for concurrency in results.concurrencies:
        for transport in results.transports:
            for server in results.servers:
                label = server_label(server)
                run = results.at(server, concurrency, transport)
                if run is None:
                    continue
                rows.append(
                    (
                        str(concurrency),
                        label,
                        *((transport,) if several else ()),
                        f"{run.throughput:,.1f}",
                        *(_number(run.percentile_ms(percent), ".1f") for percent in PERCENTILES),
                        _number(run.mean_batch_size, ".2f"),
                        _number(run.server_cpu_ms_per_request, ".2f"),
                        _times(results.speedup_over_naive(concurrency, server, transport)),
                        str(run.failures),
                    )
                )
    headers = (
        "clients",
        "server",
        *(("transport",) if several else ()),
        "req/s",
        *(f"p{percent} ms" for percent in PERCENTILES),
        "mean batch",
        "server CPU ms/req",
        "req/s over naive",
        "failed",
    )
    title = f"{results.name} ({results.task}): closed-loop load"
    return TableData(title, headers, tuple(rows))


def yardstick_table(all_results: list[ModelResults]) -> TableData:
    """Per model and transport (a column each): the service against the offline ceiling and the
    bare request."""
    measures: dict[str, list[str]] = {
        "offline ceiling, img/s": [],
        "model CPU at the ceiling, ms/img": [],
        "service at saturation, req/s": [],
        "service / ceiling": [],
        "bare model at batch 1, ms": [],
        "bare pipeline of one request, ms": [],
        "service p50 with 1 client, ms": [],
        "overhead over the bare pipeline, ms": [],
    }
    columns = []
    for results in all_results:
        for transport in results.transports:
            several = len(results.transports) > 1
            columns.append(f"{results.name} ({transport})" if several else results.name)
            offline, best = results.offline, results.saturation(transport)
            lone = results.at("dynamic", 1, transport)
            values = (
                f"{offline.ceiling_per_s:,.0f} (batch {offline.max_batch_size})",
                f"{offline.ceiling_cpu_ms:.2f}",
                "-" if best is None else f"{best.throughput:,.1f} ({best.concurrency} clients)",
                _number(results.ceiling_ratio(transport), ".2f"),
                f"{offline.model_ms:.2f}",
                f"{offline.pipeline_ms:.2f}",
                _number(lone.percentile_ms(50) if lone else None, ".2f"),
                _number(results.overhead_ms(transport), "+.2f"),
            )
            for column, value in zip(measures.values(), values, strict=True):
                column.append(value)
    rows = tuple((measure, *values) for measure, values in measures.items())
    return TableData("Against the offline ceiling and the bare single request", ("", *columns), rows)


def http_workers_table(all_results: list[ModelResults]) -> TableData | None:
    """Per model, transport and HTTP worker count other than 1 (`--http-workers`), at the
    highest concurrency the model was measured at: easerve's (dynamic batching) throughput and
    mean batch size with one HTTP process and with that many, side by side, and their ratio
    (N workers over 1). None when no other worker count ran."""
    rows = []
    for results in all_results:
        others = [workers for workers in results.http_workers if workers != 1]
        if not others or not results.concurrencies:
            continue
        clients = max(results.concurrencies)
        for transport in results.transports:
            one = results.at(DYNAMIC, clients, transport)
            for workers in others:
                many = results.at(dynamic_server(workers), clients, transport)
                row = [results.name, transport, str(clients), str(workers)]
                for figure, spec in ((_throughput, ",.1f"), (_mean_batch, ".2f")):
                    base, other = figure(one), figure(many)
                    ratio = None if base is None or other is None or base == 0 else other / base
                    row += [_number(base, spec), _number(other, spec), _times(ratio, ".2f")]
                rows.append(tuple(row))
    if not rows:
        return None
    headers = (
        "model",
        "transport",
        "clients",
        "N",
        "req/s (1)",
        "req/s (N)",
        "req/s N/1",
        "mean batch (1)",
        "mean batch (N)",
        "mean batch N/1",
    )
    title = "easerve (dynamic batching) behind N HTTP workers against 1, at the most clients measured"
    return TableData(title, headers, tuple(rows))


def peers_table(all_results: list[ModelResults]) -> TableData | None:
    """Per model and concurrency, in the peers' transport: easerve's (dynamic batching, each HTTP
    worker count) throughput and p50 / p99 beside each peer's, and easerve's throughput over the
    peer's. None when no peer ran."""
    rows = []
    for results in all_results:
        peers = [server for server in results.servers if server in PEERS]
        ours = [server for server in results.servers if server.startswith(DYNAMIC)]
        for concurrency in results.concurrencies:
            for peer in peers:
                theirs = results.at(peer, concurrency, PEER_TRANSPORT)
                for server in ours:
                    run = results.at(server, concurrency, PEER_TRANSPORT)
                    ratio = _ratio(_throughput(run), _throughput(theirs))
                    rows.append(
                        (
                            results.name,
                            str(concurrency),
                            server_label(server),
                            _number(_throughput(run), ",.1f"),
                            *(_number(run.percentile_ms(p) if run else None, ".1f") for p in (50, 99)),
                            server_label(peer),
                            _number(_throughput(theirs), ",.1f"),
                            *(_number(theirs.percentile_ms(p) if theirs else None, ".1f") for p in (50, 99)),
                            _times(ratio, ".2f"),
                        )
                    )
    if not rows:
        return None
    headers = (
        "model",
        "clients",
        "easerve",
        "req/s",
        "p50 ms",
        "p99 ms",
        "peer",
        "peer req/s",
        "peer p50 ms",
        "peer p99 ms",
        "easerve / peer req/s",
    )
    return TableData(f"easerve against its peers ({PEER_TRANSPORT} transport)", headers, tuple(rows))


def peer_targets(all_results: list[ModelResults]) -> list[Target]:
    """Per model and peer that ran, in the peers' transport: at each of SPEEDUP_CONCURRENCIES
    clients easerve (one HTTP process) answers at least as many requests per second as the peer
    with a p99 no higher, and with one client its p50 is below the peer's."""
    targets = []
    for results in all_results:
        for peer in (server for server in results.servers if server in PEERS):
            subject = f"{results.name} [{PEER_TRANSPORT}] against {peer}"
            for concurrency in SPEEDUP_CONCURRENCIES:
                ours, theirs = (
                    results.at(DYNAMIC, concurrency, PEER_TRANSPORT),
                    results.at(peer, concurrency, PEER_TRANSPORT),
                )
                ratio = _ratio(_throughput(ours), _throughput(theirs))
                targets.append(
                    Target(
                        f"{subject}: req/s ratio at {concurrency} clients (target >= 1)",
                        _times(ratio, ".2f"),
                        None if ratio is None else ratio >= 1.0,
                    )
                )
                p99s = [run.percentile_ms(99) if run else None for run in (ours, theirs)]
                measured = None not in p99s
                targets.append(
                    Target(
                        f"{subject}: p99 at {concurrency} clients, easerve / peer (target easerve <= peer)",
                        " / ".join(_ms(value, ".1f") for value in p99s),
                        p99s[0] <= p99s[1] if measured else None,
                    )
                )
            lone = [
                run.percentile_ms(50) if run else None
                for run in (results.at(DYNAMIC, 1, PEER_TRANSPORT), results.at(peer, 1, PEER_TRANSPORT))
            ]
            targets.append(
                Target(
                    f"{subject}: p50 with 1 client, easerve / peer (target easerve < peer)",
                    " / ".join(_ms(value, ".2f") for value in lone),
                    lone[0] < lone[1] if None not in lone else None,
                )
            )
    return targets


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return None if ours is None or theirs is None or theirs == 0 else ours / theirs


def target_checks(all_results: list[ModelResults]) -> list[Target]:
    """Per model, in each transport measured: service / offline ceiling at saturation (by task),
    the speedup over the naive server at each of SPEEDUP_CONCURRENCIES clients, the one-client
    overhead over the bare pipeline; and for the models of CPU_TARGET_TASKS, easerve's server CPU
    per request at CPU_CONCURRENCY clients in every transport. A target whose inputs were not
    measured has `met` None ("not measured")."""
    targets = []
    for results in all_results:
        min_ratio = MIN_CEILING_RATIO.get(results.task, DEFAULT_MIN_CEILING_RATIO)
        for transport in results.transports:
            subject = f"{results.name} [{transport}]"
            ratio = results.ceiling_ratio(transport)
            overhead = results.overhead_ms(transport)
            targets.append(
                Target(
                    f"{subject}: service / offline ceiling at saturation (target >= {min_ratio})",
                    _number(ratio, ".2f"),
                    None if ratio is None else ratio >= min_ratio,
                )
            )
            for concurrency in SPEEDUP_CONCURRENCIES:
                speedup = results.speedup_over_naive(concurrency, transport=transport)
                targets.append(
                    Target(
                        f"{subject}: dynamic batching / naive server at {concurrency} clients "
                        f"(target >= {MIN_SPEEDUP_OVER_NAIVE:.0f}x)",
                        _times(speedup),
                        None if speedup is None else speedup >= MIN_SPEEDUP_OVER_NAIVE,
                    )
                )
            targets.append(
                Target(
                    f"{subject}: p50 of a lone client over the bare pipeline (target <= {MAX_OVERHEAD_MS} ms)",
                    _ms(overhead, "+.2f"),
                    None if overhead is None else overhead <= MAX_OVERHEAD_MS,
                )
            )
        if results.task in CPU_TARGET_TASKS:
            for transport in TRANSPORTS:
                cpu_ms = results.server_cpu_ms(CPU_CONCURRENCY, transport=transport)
                model_alone = f" (the model alone: {results.offline.ceiling_cpu_ms:.2f} ms/img)"
                targets.append(
                    Target(
                        f"{results.name} [{transport}]: easerve server CPU per request at {CPU_CONCURRENCY} "
                        f"clients (target <= {MAX_SERVER_CPU_MS} ms)",
                        _ms(cpu_ms, ".2f") + ("" if cpu_ms is None else model_alone),
                        None if cpu_ms is None else cpu_ms <= MAX_SERVER_CPU_MS,
                    )
                )
    return targets + peer_targets(all_results)


def target_lines(targets: list[Target]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "not measured"}
    return [f"{target.description}: {target.value} - {verdicts[target.met]}" for target in targets]


def show(tables: list[TableData], targets: list[Target]) -> None:
    for table in tables:
        print_table(table)
    print("\n".join(target_lines(targets)))


def plot(all_results: list[ModelResults], path: Path) -> None:
    """Per model: throughput (with the offline ceiling), p50 / p99 latency and the server's CPU
    per request against clients, a line per server (and transport, when more than one ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(all_results), 3, figsize=(16, 4 * len(all_results)), squeeze=False)
    for (throughput_axis, latency_axis, cpu_axis), results in zip(axes, all_results, strict=True):
        several = len(results.transports) > 1
        for (server, transport), runs in results.runs.items():
            label = f"{server_label(server)}, {transport}" if several else server_label(server)
            clients = [run.concurrency for run in runs]
            line = throughput_axis.plot(clients, [run.throughput for run in runs], "o-", label=label)[0]
            colour = line.get_color()
            latency_axis.plot(
                clients, [run.percentile_ms(50) for run in runs], "o-", color=colour, label=f"{label}, p50"
            )
            latency_axis.plot(
                clients, [run.percentile_ms(99) for run in runs], "x--", color=colour, label=f"{label}, p99"
            )
            cpu = [(run.concurrency, run.server_cpu_ms_per_request) for run in runs]
            cpu = [(clients_, ms) for clients_, ms in cpu if ms is not None]
            if cpu:
                cpu_axis.plot(*zip(*cpu, strict=True), "o-", color=colour, label=label)
        throughput_axis.axhline(
            results.offline.ceiling_per_s, color="grey", linestyle=":", label="offline ceiling (batched onnxruntime)"
        )
        throughput_axis.set_ylabel("requests / s")
        latency_axis.set_ylabel("latency (ms)")
        latency_axis.set_yscale("log")
        cpu_axis.set_ylabel("server CPU ms / request")
        cpu_axis.set_ylim(bottom=0)
        for axis in (throughput_axis, latency_axis, cpu_axis):
            axis.set_xscale("log", base=2)
            axis.set_xlabel("concurrent clients")
            axis.set_title(results.name)
            axis.grid(True, which="both", alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ms(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{format(value, spec)} ms"


def _times(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else f"{format(value, spec)}x"


def _throughput(run: LoadRun | None) -> float | None:
    return None if run is None else run.throughput


def _mean_batch(run: LoadRun | None) -> float | None:
    return None if run is None else run.mean_batch_size
