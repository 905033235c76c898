"""``python -m vtagml_core`` entry point."""
from vtagml_core.cli import main

raise SystemExit(main())
