"""Active learning: `mdplugin learn`, from start structures and a reference to a committee that survives its MD."""
