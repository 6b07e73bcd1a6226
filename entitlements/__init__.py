"""entitlements: fine-grained rights checks behind small tokens."""

from importlib.util import find_spec

# The service depends on the SDK (entitlements_client) but does not list it as a
# dependency: no package index serves it, and listing it would let pip fetch a
# stranger's package of that name (pyproject.toml). Say how to install it instead.
if find_spec("entitlements_client") is None:  # pragma: no cover - an install mistake
    raise ImportError(
        "entitlements needs its SDK, entitlements-client, from the same checkout (it is on"
        " no package index): pip install -e ./client -e ."
    )
