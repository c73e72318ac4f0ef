"""The MD application of `mdplugin run`: options, structure input, ML/MM set-up, reporters, restarts."""
