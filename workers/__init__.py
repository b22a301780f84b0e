"""The processes you run (Procfile targets) and the `cityrelay` CLI."""
