"""Offline data sources: pure functions that read what the machine has (Debian corpora, wheels, synthesisers)."""
