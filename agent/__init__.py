"""egresswatch agent: capture -> decode -> flows/reassembly -> apps -> classify -> geo -> export."""

__version__ = "0.1.0"
