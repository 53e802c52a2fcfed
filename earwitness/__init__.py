"""Earwitness: edge-to-cloud acoustic monitoring.

Layers, bottom to top (docs/architecture.md, checked by tests/check_layers.py):
``earwitness.shared`` (used by both sides) <- ``earwitness.edge`` | ``earwitness.cloud``
<- ``earwitness.cli`` and ``earwitness.demo`` (the only modules that may import both).
This module stays empty so importing any layer loads nothing else.
"""
