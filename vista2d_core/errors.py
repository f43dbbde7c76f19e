"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input (recipe, file, plugin name), stated so they can fix it.

    ``str(error)`` is the whole message; it names the file or recipe field concerned.
    """


class RecipeError(UserError):
    """One or more problems in a recipe; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))
