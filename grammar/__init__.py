"""The spec language's grammar, shipped as package data so the parser finds it when installed."""

from importlib.resources import files

GRAMMAR_FILE = "alexnetc.lark"


def grammar_text() -> str:
    """The lark grammar of the spec language."""
    return (files(__package__) / GRAMMAR_FILE).read_text(encoding="utf-8")
