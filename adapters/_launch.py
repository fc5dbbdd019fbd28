"""What the BasicSR and KAIR launchers share: option files read strictly, ``ts`` blocks only where
they are read, refusals in one line, a missing dependency named with the line that installs it.

Option files may come from anyone. Both frameworks keep the last of two equal keys (``sigma: 0.1``
then ``sigma: 25`` trains at 25 without a word) and parse with recursive code that a file nested
100,000 deep overflows (a ``RecursionError`` traceback); :func:`read_options` refuses both,
naming the key's path. Both frameworks also pass unknown keys through, so a ``ts`` block under
``network_g`` or ``train`` would be ignored: :func:`misplaced_ts` says where it belongs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import IO, Any, NoReturn

MAX_DEPTH = 32  # option files nest 4 or 5 levels deep; the parsers overflow near 1000


class _Repeated(OrderedDict):
    """A mapping whose file gave a key twice: ``repeated`` is ``(key, first, last)``."""

    repeated: tuple[Any, Any, Any]


def unique(pairs: Iterable[tuple[Any, Any]]) -> OrderedDict:
    """The mapping of ``pairs`` (JSON's ``object_pairs_hook``, the YAML loader's mappings),
    marked where a key repeats; :func:`check_tree` refuses it with the key's path."""
    pairs = list(pairs)
    out = OrderedDict(pairs)
    if len(out) < len(pairs):
        seen: dict[Any, Any] = {}
        for key, value in pairs:
            if key in seen:
                out = _Repeated(out)
                out.repeated = (key, seen[key], out[key])
                break
            seen[key] = value
    return out


def _too_deep(source: str, path: str = "") -> ValueError:
    where = f" (at {path[:60]}...)" if path else ""
    return ValueError(f"{source}: options nested deeper than {MAX_DEPTH} levels{where}")


def _children(path: str, node: object) -> list[tuple[str, object]]:
    if isinstance(node, Mapping):
        return [(f"{path}.{k}" if path else str(k), v) for k, v in node.items()]
    if isinstance(node, list):
        return [(f"{path}[{i}]", v) for i, v in enumerate(node)]
    return []


def check_tree(opt: object, source: str) -> None:
    """Refuse a key given twice (the first in file order, by its path) and nesting deeper than
    :data:`MAX_DEPTH`; walked without recursion."""
    stack: list[tuple[str, object, int]] = [("", opt, 0)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(source, path)
        if isinstance(node, _Repeated):
            key, first, last = node.repeated
            name = f"{path}.{key}" if path else str(key)
            raise ValueError(
                f"{source}: {name} is given twice ({first!r}, then {last!r}); keep one (the "
                f"framework would silently take the last)"
            )
        stack.extend((p, v, depth + 1) for p, v in reversed(_children(path, node)))


def safe_ordered_yaml() -> tuple[type, type]:
    """BasicSR's ``ordered_yaml()`` with a *safe* loader: mappings load as ``OrderedDict``;
    aliases (``*a``), nesting past :data:`MAX_DEPTH` and repeated keys are refused."""
    import yaml

    class SafeOrderedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: object, index: object) -> object:
            event = self.peek_event()
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refused in option files", event.start_mark
                )
            if self.depth > MAX_DEPTH:  # the composer recurses: stop long before Python does
                raise yaml.composer.ComposerError(
                    None, None, f"options nested deeper than {MAX_DEPTH} levels", event.start_mark
                )
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> OrderedDict:
        return unique(loader.construct_pairs(node))

    SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return SafeOrderedLoader, yaml.SafeDumper


def _parse_json(f: IO[str], source: str) -> object:
    text = "".join(line.split("//")[0] + "\n" for line in f)
    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not JSON: {err}") from None


def _parse_yaml(f: IO[str], source: str) -> object:
    import yaml

    try:
        return yaml.load(f, Loader=safe_ordered_yaml()[0])
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        context = f"{err.context}: " if err.context else ""
        raise ValueError(f"{source}: {one_line(context + str(err.problem))}{where}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: {one_line(err)}") from None
    except TypeError as err:  # a key that is itself a list or mapping
        raise ValueError(f"{source}: {err} (a key must be a plain string or number)") from None


def read_options(path: str, flag: str, kind: str) -> dict:
    """The option file at ``path`` as a mapping: ``kind`` ``"yaml"`` (BasicSR's, through
    :func:`safe_ordered_yaml`) or ``"json"`` (KAIR's: JSON with ``//`` comments, stripped line by
    line as KAIR strips them). Errors are one-line ``ValueError``s naming ``flag`` and the file
    (``OSError`` for a file that cannot be read)."""
    source = f"{flag} {path}"
    try:
        with open(path) as f:
            opt = _parse_json(f, source) if kind == "json" else _parse_yaml(f, source)
    except OSError as err:
        raise type(err)(f"{source}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not a text file ({err.reason})") from None
    except RecursionError:
        raise _too_deep(source) from None
    if not isinstance(opt, dict):
        raise ValueError(f"{source}: not a mapping of options")
    check_tree(opt, source)
    return opt


def misplaced_ts(opt: Mapping[str, Any], places: str) -> None:
    """Refuse a ``ts`` block anywhere but the top level (the model's) and ``datasets.<phase>``
    (the data loader's), naming where it is; ``places`` says which types read those two."""
    stack: list[tuple[str, object]] = [("", opt)]
    while stack:
        path, node = stack.pop()
        read_here = path == "" or path.startswith("datasets.") and path.count(".") == 1
        if isinstance(node, Mapping) and isinstance(node.get("ts"), Mapping) and not read_here:
            raise ValueError(
                f"{path}.ts: a ts block is read only at the top level or under "
                f"datasets.<phase>, not under {path}; {places}"
            )
        skip = f"{path}.ts" if path else "ts"  # a block that is read: its contents are checked
        children = _children(path, node)
        stack.extend((p, v) for p, v in reversed(children) if not (read_here and p == skip))


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (YAML errors carry line breaks)."""
    return " ".join(str(err).split())


def refuse(parser: argparse.ArgumentParser, err: BaseException) -> NoReturn:
    """Exit 2 with ``<prog>: error: <err>`` on one line, as argparse does for flags."""
    parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")


def launched(package: str) -> bool:
    """Whether this process is ``python -m <package>`` (its launcher)."""
    argv = list(getattr(sys, "orig_argv", ()))
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] in (package, f"{package}.__main__")


def missing(err: ImportError, package: str, what: str, install: str) -> NoReturn:
    """Raise for ``package``, which needs ``what`` that failed to import with ``err``: one line
    naming the missing module and ``install``; under ``python -m <package>``, an exit (code 2)
    with that line instead of a traceback."""
    name = err.name or what.lower()
    if name == what.lower():
        message = f"{package} needs {what}, which is not installed: {install}"
    else:
        message = f"{package} needs {what}, which cannot be imported ({err}): {install}"
    if launched(package):
        sys.stderr.write(f"python -m {package}: error: {message}\n")
        raise SystemExit(2)
    raise ModuleNotFoundError(message, name=name) from err
