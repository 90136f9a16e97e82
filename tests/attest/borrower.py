"""A real borrower for the E1 sole-holder tests (review finding 3).

Run as ``python borrower.py SOCKET EXE MODE``. It creates a Unix socket and forks;
the child connects it to SOCKET and execs ``EXE 60`` (the "allowed" binary, e.g.
``sleep``), keeping the connected descriptor. The parent (this Python: another
executable) keeps its own copy, waits until the child runs EXE, prints
``ready <child pid>`` and then:

* ``hold``: waits for a line on stdin; ``close`` closes its copy and prints
  ``closed``; end of input ends it.
* ``http``: sends ``GET /whoami`` on its copy and prints the raw answer as one
  JSON string (a refusal, which comes before any request, is read unsent).

The child is killed on the way out.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time


def _wait_for_exec(pid: int, exe: str) -> None:
    # Bounded poll: the exec normally takes milliseconds.
    for _ in range(1000):
        try:
            if os.readlink(f"/proc/{pid}/exe") == exe:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit("the child never ran the allowed binary")


def main() -> int:
    path, exe, mode = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.set_inheritable(True)
    child = os.fork()
    if child == 0:
        try:
            sock.connect(path)
            os.execv(exe, [exe, "60"])  # noqa: S606 - the allowed binary, fixed argv
        finally:
            os._exit(127)
    try:
        _wait_for_exec(child, exe)
        print(f"ready {child}", flush=True)
        if mode == "hold":
            for line in sys.stdin:
                if line.strip() == "close":
                    sock.close()
                    print("closed", flush=True)
        else:
            # A refusal comes unsolicited right after the attestation: wait for it
            # first (sending into a closed connection would reset it), then speak.
            ready_to_read, _, _ = select.select([sock], [], [], 2.0)
            if not ready_to_read:
                sock.sendall(
                    b"GET /whoami HTTP/1.1\r\nHost: agentkeys\r\nConnection: close\r\n\r\n"
                )
            chunks = []
            sock.settimeout(5.0)  # an answered request may leave the connection open
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                pass
            print(json.dumps(b"".join(chunks).decode("latin-1")), flush=True)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
