"""Test-wide settings: internal errors fail tests instead of being counted and contained."""

import os

os.environ["EGRESSWATCH_STRICT"] = "1"
