"""Canary analysis: is a new version of a service worse than the one it replaces?

Library code (no click, no rich) on plain samples. This package's statistics are computed here
and tested against scipy.stats (docs/design-notes.md says why scipy is not a dependency).
"""
