"""Reference data, data sets and the training loop."""
