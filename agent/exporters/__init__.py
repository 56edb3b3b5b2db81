"""Exporters: where events go. Each has `emit(event)` and `close()`; see eve.py."""
