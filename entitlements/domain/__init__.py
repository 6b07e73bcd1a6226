"""The pure core: grants, resources, territories, windows and check evaluation.

Nothing here does I/O or imports a framework; it is tested without any server.
"""

from entitlements.domain.decision import Decision
from entitlements.domain.grant import Grant
from entitlements.domain.policy import Query, decide, subjects_for
from entitlements.domain.resource import Resource

__all__ = ["Decision", "Grant", "Query", "Resource", "decide", "subjects_for"]
