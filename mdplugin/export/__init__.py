"""The exported-model contract: the exporter, and the one loader every client calls."""
