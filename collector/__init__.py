"""flowcollector: cloud flow logs, normalized, into the tools you already run."""

__version__ = "0.1.0"
