"""Recorded test vectors (JSON) and the script that generated them; see README.md."""
