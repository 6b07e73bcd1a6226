"""How the DDEX reader says what is wrong: ``InvalidInputError`` with ``FieldError`` s.

Each ``FieldError`` names the message and the place in it as its ``field``
(``album.xml:ReleaseDeal[2]/Deal[1]/DealTerms/TerritoryCode``), says what is
wrong (naming the release or deal) as its ``message``, and carries the line
where lxml gives one. Problems in the content of a message are collected (up
to ``MAX_PROBLEMS``) so one run shows them all; a message that is not
well-formed, or not an ERN message at all, stops at the first.
"""

from __future__ import annotations

from typing import Final

from entitlements.errors import FieldError, InvalidInputError

MAX_PROBLEMS: Final = 100


def field_name(message: str, where: str = "") -> str:
    return f"{message}:{where}" if where else message


def refuse(message: str, where: str, text: str, line: int | None = None) -> InvalidInputError:
    """One fatal problem as the error to raise."""
    return InvalidInputError(FieldError(field_name(message, where), text, line))


class Problems:
    """The content problems of one message, raised together at its end."""

    def __init__(self, message: str, context: str = "") -> None:
        self.message = message
        self.context = context
        self.errors: list[FieldError] = []

    def about(self, context: str) -> Problems:
        """The same list of problems, each added through it ending in ``(context)``."""
        scoped = Problems(self.message, context)
        scoped.errors = self.errors
        return scoped

    def add(self, where: str, text: str, line: int | None = None) -> None:
        if self.context:
            text = f"{text} ({self.context})"
        if len(self.errors) < MAX_PROBLEMS:
            self.errors.append(FieldError(field_name(self.message, where), text, line))
        elif len(self.errors) == MAX_PROBLEMS:
            self.errors.append(
                FieldError(self.message, f"more than {MAX_PROBLEMS} problems; the rest not shown")
            )

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidInputError(self.errors)
