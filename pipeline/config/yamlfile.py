"""Load YAML keeping the line of every mapping and key, so errors can name them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError


class YamlMap(dict[str, Any]):
    """A mapping that knows the 1-based line of itself and of each of its keys."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YamlList(list[Any]):
    line: int
    item_lines: list[int]


def _construct(node: yaml.Node, path: Path) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = YamlMap()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(path, "mapping keys must be plain strings", key_node.start_mark.line + 1)
            key = str(_scalar(key_node, path))
            if key in out:
                raise ConfigError(path, "duplicate key", key_node.start_mark.line + 1, key)
            out[key] = _construct(value_node, path)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YamlList(_construct(child, path) for child in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        return seq
    return _scalar(node, path)


def _scalar(node: yaml.Node, path: Path) -> Any:
    # Reuse PyYAML's safe resolver so that `true`, `1.5` and dates get their usual types.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"bad value: {exc}", node.start_mark.line + 1) from None
    finally:
        loader.dispose()


def load_yaml(path: Path) -> Any:
    """Parse a YAML file into YamlMap / YamlList / scalars; errors name file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(path, f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"YAML error: {exc}") from None
    if node is None:
        raise ConfigError(path, "file is empty")
    return _construct(node, path)


def check_keys(path: Path, mapping: YamlMap, allowed: set[str], where: str) -> None:
    """Reject unknown keys loudly: a typo must never be silently ignored."""
    for key in mapping:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            raise ConfigError(path, f"unknown key (expected one of: {expected})", mapping.line_of(key),
                              f"{where}.{key}" if where else key)


def expect_map(path: Path, value: Any, where: str, line: int) -> YamlMap:
    if not isinstance(value, YamlMap):
        raise ConfigError(path, f"must be a mapping, got {type(value).__name__}", line, where)
    return value


def expect_list(path: Path, value: Any, where: str, line: int) -> YamlList:
    if not isinstance(value, YamlList):
        raise ConfigError(path, f"must be a list, got {type(value).__name__}", line, where)
    return value
