"""The one error every data set loader raises for data it cannot use."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """A file or folder of a data set is missing, corrupt or inconsistent.

    The message always names the offending path and the reason, so a user can fix the data;
    loaders never skip such a sample silently.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
