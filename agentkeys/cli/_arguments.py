"""argparse ``type`` functions of the command line's identifiers (a bad one exits 2)."""

from __future__ import annotations

import argparse

from agentkeys.errors import FormatError
from agentkeys.omni import agent_omni, normalize_service

__all__ = [
    "label_arg",
    "service_arg",
]


def label_arg(text: str) -> str:
    """argparse ``type`` of an agent label (a bad one is a usage error, exit 2)."""
    try:
        agent_omni("0" * 64, text)
    except FormatError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    return text


def service_arg(text: str) -> str:
    """argparse ``type`` of a service name: the normalized name (a bad one exits 2)."""
    try:
        return normalize_service(text)
    except FormatError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
