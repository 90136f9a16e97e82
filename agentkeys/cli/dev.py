"""``agentkeys dev``: the embedded local stack and the demo scenario."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="run the embedded local stack")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)
    demo = dev_sub.add_parser("demo", help="run the scripted demo on the local stack")
    demo.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    print("agentkeys demo: not yet built")
    return 0
