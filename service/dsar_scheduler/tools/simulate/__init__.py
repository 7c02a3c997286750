"""``dsar simulate``: days of traffic through the real tick on a virtual clock (see run.py)."""
