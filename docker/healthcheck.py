"""Container health probe: exit 0 when the service's /readyz answers 200, 1 otherwise.

Standard library only (no curl in the image). The port is the service's own setting.
"""

import os
import sys
import urllib.request

PORT = os.environ.get("EASERVE_PORT", "8000")

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/readyz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as error:  # connection refused, timeout, or HTTPError (503 while loading)
    print(f"not ready: {error}", file=sys.stderr)
    sys.exit(1)
