"""Reference-data generation for `mdplugin data`: labellers, resumable trajectories, molecules, water boxes, relabelling."""
