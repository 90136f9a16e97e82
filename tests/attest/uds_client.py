"""A real client process for the E1 tests: N keep-alive requests over a Unix socket.

Run as ``python uds_client.py SOCKET N [--drop-to UID]``. With ``--drop-to`` it
forks; the child gives up root (setgid/setuid) and makes the requests. Prints
one JSON line: the requesting process's own pid/uid and the server's answers.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import httpx


def _requests(client: httpx.Client, count: int) -> None:
    with client:
        answers = [client.get("http://agentkeys/whoami").json() for _ in range(count)]
    print(json.dumps({"pid": os.getpid(), "uid": os.getuid(), "answers": answers}), flush=True)


def main() -> int:
    path, count = sys.argv[1], int(sys.argv[2])
    # Built before any fork: the dropped child cannot read root's Python
    # installation to import lazily loaded modules.
    client = httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10)
    if len(sys.argv) == 5 and sys.argv[3] == "--drop-to":
        uid = int(sys.argv[4])
        child = os.fork()
        if child == 0:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                _requests(client, count)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        return os.waitstatus_to_exitcode(status)
    _requests(client, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
