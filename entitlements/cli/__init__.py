"""The ``entitlements`` command line."""
