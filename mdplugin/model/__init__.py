"""The network and its training checkpoints."""
