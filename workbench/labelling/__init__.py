"""Labelling: edits in memory, saving them back (journal, undo, conflicts), suggestions, review."""
