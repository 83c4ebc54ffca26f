"""The snippet functions of docs/gen_numbers.py, one module per topic (the registry and the CLI stay there)."""
