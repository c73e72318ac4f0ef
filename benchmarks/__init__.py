"""mdplugin benchmarks (see README.md): importable, so that `mdplugin bench` calls the same functions."""
