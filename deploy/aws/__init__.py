"""The AWS policy documents (``*.json``), installed as the package data ``agentkeys._aws``.

``agentkeys.worker.iam`` renders them through ``importlib.resources`` so a wheel installed
outside this checkout finds them too; ``generate.py`` is the operator's renderer.
"""
