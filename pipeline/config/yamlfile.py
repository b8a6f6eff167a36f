"""Load YAML keeping the line of every mapping and key, so errors can name them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.errors import ConfigError

try:
    from yaml._yaml import CParser

    LIBYAML = True
except ImportError:  # PyYAML built without libyaml: the Python loader does it all
    LIBYAML = False


class YamlMap(dict[str, Any]):
    """A mapping that knows the 1-based line of itself and of each of its keys."""

    line: int
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class YamlList(list[Any]):
    line: int
    item_lines: list[int]


# Limits that keep a hostile file (`try-rules` reads candidate files others supply) from
# exhausting the stack or memory. Real config files nest under 12 levels and expand to a few
# thousand values; aliases are allowed (topics.yaml reuses word lists), their expansion is not.
MAX_DEPTH = 64
MAX_VALUES = 50_000


class _Bounded(yaml.composer.Composer):
    """PyYAML's composer with three refusals, each raised while composing (before any
    expansion is built): nesting deeper than MAX_DEPTH (aliases included: an alias puts its
    anchor's whole subtree where it stands), an alias to a node that contains it (`&r [*r]`),
    and a document whose aliases would expand to more than MAX_VALUES values (nested anchors:
    "billion laughs"). Composing stays linear in the size of the text, since an alias is
    composed as a reference to its anchor's node."""

    if TYPE_CHECKING:  # the parser's, which the stubs do not give the composer
        def peek_event(self) -> Any: ...
        def check_event(self, *choices: Any) -> bool: ...

    def _bound(self, path: Path) -> None:
        self.path = path
        self._depth = 0
        # For each finished node: how many values and how many levels it expands to.
        self._sizes: dict[yaml.Node, tuple[int, int]] = {}

    def _line(self) -> int:
        event = self.peek_event()
        return int(event.start_mark.line) + 1 if event.start_mark else 0

    def _compose(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        node = super().compose_node(parent, index)
        assert node is not None  # None only at the end of the stream, never for a node event
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            line = self._line()
            node = self._compose(parent, index)
            if node not in self._sizes:  # its anchor is still open: the alias is inside it
                raise ConfigError(self.path, "recursive YAML alias (an anchor used inside itself)", line)
            if self._depth + self._sizes[node][1] > MAX_DEPTH:
                raise ConfigError(self.path, f"nested more than {MAX_DEPTH} levels deep once its aliases "
                                  "are expanded", line)
            return node
        line = self._line()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError(self.path, f"nested more than {MAX_DEPTH} levels deep", line)
        node = self._compose(parent, index)
        self._depth -= 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        values = 1 + sum(self._sizes[child][0] for child in children)
        levels = 1 + max((self._sizes[child][1] for child in children), default=0)
        if values > MAX_VALUES:
            raise ConfigError(self.path, f"YAML aliases expand to more than {MAX_VALUES:,} values "
                              "(nested anchors?)", line)
        self._sizes[node] = (values, levels)
        return node


class _BoundedLoader(_Bounded, yaml.SafeLoader):
    """The safe loader, all in Python, with the refusals of _Bounded."""

    def __init__(self, text: str, path: Path) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._bound(path)


class _FastBoundedLoader(_Bounded, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """The same composer over libyaml's parser (C): topics.yaml loads four times faster, and every
    run loads it. Only for text the Python loader reads without error (see load_yaml)."""

    def __init__(self, text: str, path: Path) -> None:
        CParser.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._bound(path)


def _compose(loader: _BoundedLoader | _FastBoundedLoader, path: Path) -> Any:
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(path, "file is empty")
        return _construct(node, path, loader)
    finally:
        loader.dispose()


def _construct(node: yaml.Node, path: Path, loader: yaml.constructor.SafeConstructor) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = YamlMap()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(path, "mapping keys must be plain strings", key_node.start_mark.line + 1)
            key = str(_scalar(key_node, path, loader))
            if key in out:
                raise ConfigError(path, "duplicate key", key_node.start_mark.line + 1, key)
            out[key] = _construct(value_node, path, loader)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YamlList(_construct(child, path, loader) for child in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        return seq
    return _scalar(node, path, loader)


def _scalar(node: yaml.Node, path: Path, loader: yaml.constructor.SafeConstructor) -> Any:
    # PyYAML's safe resolver and constructors, so that `true`, `1.5` and dates get their usual types.
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"bad value: {_reason(exc)}", node.start_mark.line + 1) from None
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError (2025-13-45: ValueError)
        raise ConfigError(path, f"bad value {node.value!r}: {exc}", node.start_mark.line + 1) from None


def _reason(exc: yaml.YAMLError) -> str:
    """One line for a PyYAML error (its str() adds lines pointing into the text)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return exc.problem or exc.context or "syntax error"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character #x{exc.character:04x} is not allowed in YAML"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    if LIBYAML and not yaml.reader.Reader.NON_PRINTABLE.search(text):
        try:
            return _compose(_FastBoundedLoader(text, path), path)
        except yaml.YAMLError:
            pass  # the Python loader below names the problem (libyaml words it differently)
    try:
        # The reader checks the text first: a control character raises here.
        return _compose(_BoundedLoader(text, path), path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(path, f"YAML syntax error: {problem}", line) from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(path, f"YAML error: {_reason(exc)}", text.count("\n", 0, exc.position) + 1) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"YAML error: {_reason(exc)}") from None


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
