"""Command-line entry modules: one per ``respo`` subcommand (argv parsing lives only here)."""
