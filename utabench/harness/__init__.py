"""The harness: registry, config loading, runner, results store, tables and the command line."""
