"""Build-time infrastructure: registry, template and build contexts, local runs, the CLI."""
