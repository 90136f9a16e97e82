"""Compiled contract artifacts, installed as the package data ``agentkeys._contracts``.

contracts/build.py writes one ``<Contract>.json`` per contract here (ABI and creation
bytecode); ``agentkeys.chain.artifacts`` reads them through ``importlib.resources`` so a
wheel installed outside this checkout finds them too. No code lives here.
"""
