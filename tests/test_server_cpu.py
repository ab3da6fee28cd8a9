"""`loadtest.server`: the CPU time of a server's process tree (what `easerve bench serve` divides
by the requests answered), and the started server's process made available to its caller.

The processes here burn a bounded amount of CPU time each (measured by their own process clock),
so the assertions depend on work done, not on how fast the machine is."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import psutil
import pytest

from easerve.loadtest.server import free_port, process_tree_cpu_s, running_server, running_server_process

BOUT_S = 0.1  # CPU seconds the grandchild burns per request
# The CPU clock the kernel reports moves in ticks (usually 10 ms); half a bout is well above that.
AT_LEAST_S = BOUT_S / 2
TICK_S = 1 / os.sysconf("SC_CLK_TCK")

# The grandchild burns BOUT_S of CPU for each line it reads, then answers "done".
GRANDCHILD = textwrap.dedent(
    """
    import sys, time
    for line in sys.stdin:
        end = time.process_time() + float(line)
        while time.process_time() < end:
            pass
        print("done", flush=True)
    """
)
# The child, idle itself, starts the grandchild and relays each line to it; "reap" closes the
# grandchild's input and waits for it to exit.
CHILD = textwrap.dedent(
    f"""
    import subprocess, sys
    grandchild = subprocess.Popen(
        [sys.executable, "-c", {GRANDCHILD!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    print(grandchild.pid, flush=True)
    for line in sys.stdin:
        if line.strip() == "reap":
            grandchild.stdin.close()
            grandchild.wait()
            print("reaped", flush=True)
        else:
            grandchild.stdin.write(line)
            grandchild.stdin.flush()
            print(grandchild.stdout.readline().strip(), flush=True)
    """
)


def _ask(process: subprocess.Popen, line: str) -> str:
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process.stdout.readline().strip()


def test_the_cpu_of_a_process_tree_is_positive_grows_and_includes_a_grandchild():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        grandchild_pid = int(child.stdout.readline())
        started = process_tree_cpu_s(child.pid)
        assert started > 0  # two Python interpreters started

        assert _ask(child, str(BOUT_S)) == "done"
        grandchild = process_tree_cpu_s(grandchild_pid)
        after_one = process_tree_cpu_s(child.pid)
        assert grandchild >= AT_LEAST_S
        assert after_one >= grandchild  # read later, and the tree holds the grandchild
        assert after_one - started >= AT_LEAST_S  # the work was the grandchild's alone

        assert _ask(child, str(BOUT_S)) == "done"
        after_two = process_tree_cpu_s(child.pid)
        assert after_two - after_one >= AT_LEAST_S

        # Once the grandchild has exited and been waited for, its time is its parent's children time.
        assert _ask(child, "reap") == "reaped"
        assert not psutil.pid_exists(grandchild_pid) or psutil.Process(grandchild_pid).ppid() != child.pid
        # A live process's times and an exited child's (added to its parent's) are each rounded to
        # the kernel's clock tick on their own: the same work may read up to a tick less once
        # reaped (a full run of the suite saw it once); a lost grandchild would read 2 bouts less.
        assert process_tree_cpu_s(child.pid) >= after_two - TICK_S
    finally:
        child.stdin.close()
        child.wait(30)
    with pytest.raises(psutil.NoSuchProcess):
        process_tree_cpu_s(child.pid)


# A server that is ready at once: 200 on every GET.
READY_SERVER = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Ready).serve_forever()
    """
)


def test_a_started_server_yields_its_url_and_process_and_the_old_form_its_url(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", READY_SERVER, str(port)]
    with running_server_process(command, url, tmp_path / "server.log", 30) as server:
        assert server.url == url
        assert server.pid == server.process.pid and server.process.poll() is None
        assert process_tree_cpu_s(server.pid) > 0
    assert server.process.poll() is not None  # stopped on exit

    port = free_port()
    command = [sys.executable, "-c", READY_SERVER, str(port)]
    with running_server(command, f"http://127.0.0.1:{port}", tmp_path / "again.log", 30) as plain_url:
        assert plain_url == f"http://127.0.0.1:{port}"
