"""What the benchmarks report: tables built once as `TableData`, shown on the console (rich) and
written into one markdown page per benchmark. Imports nothing heavy, so a report loads fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TableData:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def to_markdown(table: TableData) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(table.headers) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def print_table(table: TableData) -> None:
    from rich.console import Console
    from rich.table import Table

    rich_table = Table(title=table.title, title_justify="left")
    for i, header in enumerate(table.headers):
        rich_table.add_column(header, justify="left" if i == 0 else "right")
    for row in table.rows:
        rich_table.add_row(*row)
    Console().print(rich_table)


def write_report(
    path: Path,
    benchmark: str,
    environment: str,
    tables: list[TableData],
    target_lines: list[str],
    method: str,
    figure: str | None = None,
) -> None:
    """The markdown page of `easerve bench <benchmark>`: environment, figure (a file name beside
    the page), tables, targets and method."""
    parts = [f"# easerve bench {benchmark}", "", environment, ""]
    if figure is not None:
        parts += [f"![{benchmark}]({figure})", ""]
    parts += [
        *(to_markdown(table) + "\n" for table in tables),
        "### Targets",
        "",
        *(f"- {line}" for line in target_lines),
        "",
        "### Method",
        "",
        method,
        "",
    ]
    path.write_text("\n".join(parts))
