"""A real E2 server process for the netns tests.

``python tcp_server.py HOST COUNT [--pod-wide]``: listens on HOST (port chosen
by the kernel, printed as the first line), accepts COUNT connections, attests
each with :func:`attest.identify_tcp_peer`, prints the outcome as one JSON line
and sends it back to the client before closing.
"""

from __future__ import annotations

import json
import socket
import sys

from attest import AttestError, ExeHashCache, identify_tcp_peer
from attest.peercred import boot_ticks_now


def main() -> int:
    host, count = sys.argv[1], int(sys.argv[2])
    pod_wide = "--pod-wide" in sys.argv[3:]
    cache = ExeHashCache()
    with socket.create_server((host, 0)) as server:
        print(server.getsockname()[1], flush=True)
        for _ in range(count):
            conn, _ = server.accept()
            with conn:
                try:
                    caller = identify_tcp_peer(
                        conn, cache=cache, accepted_at=boot_ticks_now(), pod_wide=pod_wide
                    )
                    p = caller.process
                    outcome = {
                        "ok": True,
                        "pod_wide": caller.pod_wide,
                        "pid": p and p.pid,
                        "uid": p and p.uid,
                        "exe": p and p.exe_path,
                        "sha256": p and p.exe_sha256,
                    }
                except AttestError as exc:
                    outcome = {"ok": False, "error": exc.error, "reason": exc.reason}
                line = json.dumps(outcome)
                print(line, flush=True)
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + line.encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
