"""Renderers: the rich and text views of the engine's results (``--format json`` needs none)."""
