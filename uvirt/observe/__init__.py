"""Watching a guest: recorded runs, the decoded trace, ``explain`` and the ring
inspector."""
