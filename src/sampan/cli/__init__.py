"""The `sampan` command line: thin commands over the Python API, one file per subcommand."""
