"""Each subcommand's help says what it does and what each of its actions does."""

from __future__ import annotations

import pytest
from ordoscan.cli import build_parser


def help_of(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return str(sub.choices[command].format_help())  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("command", "actions"),
    [("queue", ["stats", "list", "purge"]), ("config", ["show", "validate", "schema"])],
)
def test_each_action_is_described(command: str, actions: list[str]) -> None:
    text = " ".join(help_of(command).split())
    for action in actions:
        assert f"{action}: " in text, f"`ordoscan {command} --help` does not describe {action}"


def test_listen_help_says_payloads_are_printed_in_clear() -> None:
    assert "in clear" in " ".join(help_of("listen").split()).lower()


@pytest.mark.parametrize("command", ["run", "demo", "decode", "check", "queue", "config",
                                     "listen"])
def test_every_subcommand_has_a_help_line(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helps = {a.dest: a.help for a in sub._choices_actions}  # type: ignore[attr-defined]
    assert helps[command]
    assert help_of(command).startswith(f"usage: ordoscan {command}")
