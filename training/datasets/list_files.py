"""Reading the plain-text lists data sets ship: class names, split ids, one item per line."""

from __future__ import annotations

from pathlib import Path

from easerve.training.datasets.errors import DatasetError


def read_lines(path: Path) -> list[str]:
    """The stripped non-empty lines of the text file at `path`; DatasetError if missing or empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(path, f"cannot read list file ({error})") from error
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(path, "is empty")
    return lines
