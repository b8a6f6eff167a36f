"""YAML bombs and recursion (issue 16, point 5): a config or rules file that nests too deep,
refers to itself or expands its aliases past a bound is refused with one line naming the
file and the line, exit code 2, before the expansion is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.yamlfile import MAX_DEPTH, MAX_VALUES, load_yaml
from pipeline.errors import ConfigError


def _bomb(levels: int, width: int = 9) -> str:
    """Nested anchors, each list repeating the previous one `width` times: a few hundred bytes
    that expand to width**levels values."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nfeeds: *a{levels - 1}\n"


def _rules_nested(depth: int) -> str:
    return ("topics:\n  - id: t\n    heading: T\n    theme: T\n    rules:\n      - name: r\n        all: "
            + "[{all: " * depth + "[mot]" + "}]" * depth + "\n")


def _write(tmp_path: Path, text: str, name: str = "file.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_anchors_are_refused_before_they_expand(tmp_path: Path) -> None:
    # 6 levels of 9: 531,441 values. Expanding them took seconds and hundreds of MB per level.
    path = _write(tmp_path, _bomb(6))
    assert len(path.read_bytes()) < 1000
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert str(caught.value) == (f"{path}:{caught.value.line}: YAML aliases expand to more than "
                                 f"{MAX_VALUES:,} values (nested anchors?)")
    assert caught.value.line in range(1, 7)


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    # topics.yaml reuses word lists with anchors and aliases: they keep working.
    loaded = load_yaml(_write(tmp_path, "words: &w [IA, AI]\nfirst: {any: *w}\nsecond: {any: *w}\n"))
    assert loaded["first"]["any"] == ["IA", "AI"] == loaded["second"]["any"]
    assert loaded["first"]["any"] is not loaded["second"]["any"]  # no shared mutable value


@pytest.mark.parametrize("text", ["fetch: &r [*r]\nfeeds: []\n", "a: &m {b: {c: *m}}\n"])
def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"recursive YAML alias \(an anchor used inside itself\)$"):
        load_yaml(path)


def test_nesting_deeper_than_the_bound_is_refused(tmp_path: Path) -> None:
    # The mapping, MAX_DEPTH - 2 lists and the scalar: MAX_DEPTH levels in all.
    assert load_yaml(_write(tmp_path, "a: " + "[" * (MAX_DEPTH - 2) + "x" + "]" * (MAX_DEPTH - 2) + "\n"))
    path = _write(tmp_path, "a: " + "[" * 5000 + "x" + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert str(caught.value) == f"{path}:1: nested more than {MAX_DEPTH} levels deep"


def test_aliases_cannot_stack_depth_past_the_bound(tmp_path: Path) -> None:
    # Each anchor is shallow, but every alias puts the whole previous chain where it stands.
    lines = ["a0: &a0 x"] + [f"a{i}: &a{i} " + "[" * 20 + f"*a{i - 1}" + "]" * 20 for i in range(1, 200)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep once its aliases"):
        load_yaml(path)


@pytest.mark.parametrize(
    ("command", "text", "reason"),
    [
        ("config", "fetch: &r [*r]\nfeeds: []\n", ":1: recursive YAML alias"),
        ("config", _bomb(9), ": YAML aliases expand to more than"),
        ("topics", _rules_nested(300), ":7: nested more than 64 levels deep"),
        ("candidate", _bomb(10), ": YAML aliases expand to more than"),
        ("candidate", _rules_nested(300), ":7: nested more than 64 levels deep"),
    ],
)
def test_cli_refuses_hostile_yaml_with_one_line_and_exit_2(tmp_path: Path, cli, repo: Path, command: str,
                                                           text: str, reason: str) -> None:
    hostile = _write(tmp_path, text)
    config = repo / "examples" / "demo.yaml" if command != "config" else hostile
    topics = repo / "topics.yaml" if command != "topics" else hostile
    if command == "candidate":  # try-rules reads candidate files that others supply
        result = cli("try-rules", hostile, "--config", config, "--topics", topics, "--db", tmp_path / "none.sqlite3")
    else:
        result = cli("check", "--config", config, "--topics", topics)
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert result.err.startswith(f"pipeline: error: {hostile}")
    assert reason in result.err
