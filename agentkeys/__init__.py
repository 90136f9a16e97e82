"""agentkeys: a credential broker that lets AI agents use API keys without holding them.

See ../shared/SPEC.md (the product specification) and docs/architecture.md.
"""

__version__ = "0.1.0"
