"""Model families the kit can train and compare, selectable by name (see :mod:`.registry`)."""
