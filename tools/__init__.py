"""Developer and CI tooling (not part of the installed package)."""
