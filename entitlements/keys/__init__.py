"""The service's own token-signing keys."""
