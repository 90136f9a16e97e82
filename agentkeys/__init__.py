"""agentkeys: a credential broker that lets AI agents use API keys without holding them.

See ../shared/SPEC.md (the product specification) and docs/architecture.md.
"""

import sys as _sys

# py_ecc, which eth_account imports, raises the interpreter's recursion limit to
# 100000 for the whole process. CPython's JSON decoder (and any recursive parser)
# then overflows the C stack on deeply nested input -- one 64 KiB body of "["
# segfaults a service -- instead of raising RecursionError. Import it first and put
# the limit back, so every parser in every agentkeys process fails cleanly; nothing
# agentkeys uses from eth_account (signing, EIP-712) needs deep recursion.
import py_ecc as _py_ecc  # noqa: F401  (imported for its side effect, undone below)

RECURSION_LIMIT = 1000
if _sys.getrecursionlimit() > RECURSION_LIMIT:
    _sys.setrecursionlimit(RECURSION_LIMIT)

__version__ = "0.1.0"
