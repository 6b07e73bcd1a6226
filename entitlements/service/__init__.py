"""Use cases (checks, tokens, imports): async, no web framework."""
