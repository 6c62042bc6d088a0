"""The foundations lab: one experiment per claim of the notes (`llmlab exp list`)."""
