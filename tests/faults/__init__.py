"""The fault suite: real processes, injected faults, one checker (see ``checker.py``)."""
