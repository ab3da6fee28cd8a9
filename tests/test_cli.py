"""The `easerve` command in the serving install, which has no torch."""

import subprocess
import sys

BLOCK_TORCH_AND_BUILD_THE_PARSER = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from easerve.cli import build_parser
parser = build_parser()
print(sorted(parser._subparsers._group_actions[0].choices))
"""


def test_every_subcommand_registers_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH_AND_BUILD_THE_PARSER], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("serve", "weights", "export", "bench", "loadtest"):
        assert f"'{name}'" in result.stdout
