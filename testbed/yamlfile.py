"""Reading a user's YAML file safely: regular UTF-8 files only, bounded size, aliases and depth."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import UserError

MAX_BYTES = 1 << 20  # scenario files are a few KiB
MAX_ALIASES = 100
MAX_NODES = 10_000  # after expanding aliases: what a consumer would walk
MAX_DEPTH = 64


class _Limit(Exception):
    """The document is over one of the bounds; the message says which."""


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts aliases and nesting while composing, before constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} aliases (*name); allowed: at most "
                             f"{MAX_ALIASES} aliases")
        else:
            self._nodes += 1  # bounds memory while composing, before any expansion
            if self._nodes > MAX_NODES:
                raise _Limit(f"more than {MAX_NODES} values; allowed: at most {MAX_NODES}")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"nested deeper than {MAX_DEPTH} levels; allowed: at most "
                             f"{MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """Nodes a consumer walks once aliases are expanded; refuses cycles and blow-ups."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in visiting:
            raise _Limit("an alias refers to a node that contains it (a cycle); allowed: "
                         "aliases to finished nodes only")
        visiting.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MAX_NODES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_NODES:
                    break
        visiting.discard(key)
        if total > MAX_NODES:
            raise _Limit(f"expands to more than {MAX_NODES} values (an alias bomb?); "
                         f"allowed: at most {MAX_NODES}")
        sizes[key] = total
        return total

    return size(root)


def read_text(file: Path, what: str = "file") -> str:
    """The file's text: it must be a regular, UTF-8 file of at most MAX_BYTES; never opens a
    FIFO or a device."""
    try:
        st = file.stat()
    except FileNotFoundError as e:
        raise UserError(f"{file}: {what} does not exist") from e
    except (OSError, ValueError) as e:
        raise UserError(f"{file}: cannot read the {what}: "
                        f"{getattr(e, 'strerror', None) or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{file}: is a directory; allowed: a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{file}: is not a regular file (a FIFO, socket or device); allowed: "
                        f"a {what}")
    if st.st_size > MAX_BYTES:
        raise UserError(f"{file}: is {st.st_size} bytes; allowed: at most {MAX_BYTES} bytes")
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{file}: cannot read the {what}: {e.strerror or e}") from e
    if len(raw) > MAX_BYTES:
        raise UserError(f"{file}: is over {MAX_BYTES} bytes; allowed: at most {MAX_BYTES} bytes")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw:
        raise UserError(f"{file}: is UTF-16 or binary, not text; allowed: UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{file}: is not UTF-8 (invalid byte at offset {e.start}); allowed: "
                        "UTF-8 text") from e


def load(file: Path, what: str = "file") -> Any:
    """Parse one YAML document from `file` with SafeLoader semantics and the bounds above."""
    text = read_text(file, what)
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses control characters already
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Limit as e:
        raise UserError(f"{file}: refused: {e}") from None
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise UserError(f"{file}: not valid YAML: {detail[:400]}; allowed: one YAML mapping "
                        "of fields") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # the constructors' own refusals, e.g. a timestamp out of range or an unhashable key
        raise UserError(f"{file}: not valid YAML: {str(e)[:200]}; allowed: one YAML mapping "
                        "of fields") from None
    finally:
        if loader is not None:
            loader.dispose()
