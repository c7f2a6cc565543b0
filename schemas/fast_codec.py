"""The consumer's fast path: the pydantic contracts compiled to msgspec decoders.

Strict pydantic validation was half of the consumer's CPU time (about 2.4x ``json.loads`` per
event). msgspec decodes and checks the same constraints about five times faster (2-3 times
with the Python checks that complete them). The pydantic models stay the single source of
truth: :func:`compile_model` *derives* msgspec types from
their fields (types, lengths, bounds, patterns, literals, ``extra="forbid"``) and re-runs
their own Python validators (field ``AfterValidator`` s and ``model_validator`` s) on the
result. Anything the compiler does not understand raises at build time, so a new field cannot
silently escape the fast path.

The fast path only ever *accepts*: when msgspec or a validator refuses a message,
:func:`schemas.codec.decode` runs the pydantic model to give the precise dead-letter reason
(and where msgspec is stricter, pydantic's verdict wins). Tests run the
decoder corpus and hypothesis-generated mutations through both and require that the fast path
never accepts what pydantic refuses.
"""

import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from operator import attrgetter
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import msgspec
from pydantic import AfterValidator, AwareDatetime, JsonValue
from pydantic.fields import FieldInfo
from typing_extensions import is_typeddict

from schemas.base import Event

_PATTERN_META = "_PydanticGeneralMetadata"
Check = Callable[[Any, "_Info"], Any]


class FastEvent(msgspec.Struct, forbid_unknown_fields=True, tag_field="type", gc=False):
    """Base of the compiled structs: attribute-compatible with the pydantic events."""

    @property
    def type(self) -> str:
        return str(self.__struct_config__.tag)


@dataclass(frozen=True)
class _Info:
    """What pydantic passes a two-argument validator; only ``context`` is read."""

    context: dict[str, Any] | None = None


_NO_CONTEXT = _Info()


@dataclass(frozen=True)
class _Forbidden:
    """A ``^[^...]+$`` pattern, checked as "none of these characters" on many strings at
    once: msgspec runs a pattern through Python's ``re`` per string (13 us for 30 ids)."""

    chars: re.Pattern[str]

    def __call__(self, value: str, info: "_Info | None" = None) -> str:
        if self.chars.search(value):
            raise ValueError("forbidden character")
        return value

    def check_all(self, values: Iterable[str]) -> None:
        # The concatenation holds a forbidden character iff one of the strings does.
        if self.chars.search("".join(values)):
            raise ValueError("forbidden character")


@dataclass
class _Compiled:
    struct: type[FastEvent]
    #: (field, check) for top-level fields: the value is replaced by what the check returns.
    field_checks: list[tuple[str, Check]]
    #: (field, key, check) for keys of TypedDicts inside a list field.
    item_checks: list[tuple[str, str, Check]]
    model_checks: list[Callable[[Any], Any]]
    #: Character checks run once per message over every string they apply to:
    #: (check, top-level fields, (list field, required key) pairs).
    forbidden: list[tuple[_Forbidden, list[str], list[tuple[str, str]]]]
    #: Top-level fields that are never None.
    required: frozenset[str] = frozenset()
    #: All of the above as one straight-line function (see :func:`_generate`).
    check: Callable[[Any, "_Info"], None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.check = _generate(self)


_NEGATED_CLASS = re.compile(r"\^\[\^([^\]]+)\]\+\$")


_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z"


def _parse_datetime(value: str, info: "_Info") -> datetime:
    return datetime.fromisoformat(value)  # ValueError for 24:00, Feb 30, leap seconds


def _rust_pattern(pattern: str) -> str:
    # pydantic matches with Rust's regex, where `$` only matches at the very end; Python's
    # `re` (msgspec) also matches `$` before a final newline. `\Z` is Rust's `$`.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _constraints(metadata: Iterable[Any], checks: list[Check]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            meta.update(_constraints(item.metadata, checks))
        elif isinstance(item, at.MinLen):
            meta["min_length"] = item.min_length
        elif isinstance(item, at.MaxLen):
            meta["max_length"] = item.max_length
        elif isinstance(item, at.Ge):
            meta["ge"] = item.ge
        elif isinstance(item, at.Gt):
            meta["gt"] = item.gt
        elif isinstance(item, at.Le):
            meta["le"] = item.le
        elif isinstance(item, at.Lt):
            meta["lt"] = item.lt
        elif type(item).__name__ == _PATTERN_META and set(vars(item)) <= {"pattern"}:
            negated = _NEGATED_CLASS.fullmatch(item.pattern)
            if negated:
                meta.setdefault("min_length", 1)
                checks.append(_Forbidden(re.compile(f"[{negated.group(1)}]")))
            else:
                meta["pattern"] = _rust_pattern(item.pattern)
        elif isinstance(item, AfterValidator):
            checks.append(_call(item.func))
        else:
            raise TypeError(f"no fast path for constraint {item!r}")
    return meta


def _call(func: Callable[..., Any]) -> Check:
    if len(inspect.signature(func).parameters) == 2:
        return func
    return partial(_without_info, func)


def _without_info(func: Callable[[Any], Any], value: Any, info: _Info) -> Any:
    return func(value)


def _annotate(tp: Any, meta: dict[str, Any]) -> Any:
    return Annotated[tp, msgspec.Meta(**meta)] if meta else tp


class _Compiler:
    def __init__(self) -> None:
        self.item_checks: list[tuple[str, Check]] = []  # (key, check) of the last TypedDict
        self.has_struct = False
        self.required_keys: frozenset[str] = frozenset()

    def convert(self, tp: Any, metadata: Iterable[Any], checks: list[Check]) -> Any:
        meta = _constraints(metadata, checks)
        origin = get_origin(tp)
        if origin is Annotated:
            base, *extras = get_args(tp)
            return self.convert(base, [*extras, *metadata], checks)
        if origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1 or meta:
                raise TypeError(f"no fast path for {tp!r}")
            return Union[self.convert(args[0], (), checks), None]  # noqa: UP007
        if origin is Literal or tp in (str, int):
            return _annotate(tp, meta)
        if tp is AwareDatetime:
            if meta:
                raise TypeError(f"no fast path for constraints {meta} on a datetime")
            # Parsed here rather than by msgspec, which rounds nanoseconds where pydantic
            # truncates them; anything this narrower format refuses goes to pydantic.
            checks.insert(0, _parse_datetime)
            return Annotated[str, msgspec.Meta(pattern=_RFC3339)]
        if origin is list:
            (item,) = get_args(tp)
            return _annotate(list[self.convert(item, (), [])], meta)  # type: ignore[misc]
        if origin is dict and get_args(tp) == (str, JsonValue):
            return _annotate(dict[str, Any], meta)
        if is_typeddict(tp):
            return self.typed_dict(tp)
        raise TypeError(f"no fast path for {tp!r}")

    def typed_dict(self, tp: Any) -> type[msgspec.Struct]:
        hints = typing.get_type_hints(tp, include_extras=True)
        config = getattr(tp, "__pydantic_config__", {})
        if config.get("extra") != "forbid" or not config.get("strict"):
            raise TypeError(f"{tp.__name__}: the fast path needs strict, extra='forbid'")
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        for key, hint in hints.items():
            checks: list[Check] = []
            required = key in tp.__required_keys__
            if get_origin(hint) in (typing.NotRequired, typing.Required):
                (hint,) = get_args(hint)
            converted = self.convert(hint, (), checks)
            self.item_checks.extend((key, c) for c in checks)
            if required:
                fields.append((key, converted))
            else:
                # Absent reads as None; an explicit null is still refused (the type has no
                # None), as pydantic refuses it.
                fields.append((key, converted, None))
        self.has_struct = True
        self.required_keys = frozenset(tp.__required_keys__)
        return msgspec.defstruct(f"Fast{tp.__name__}", fields, forbid_unknown_fields=True, gc=False)


def compile_model(model: type[Event]) -> _Compiled:
    """Derive a msgspec struct and the Python checks that complete it from ``model``."""
    config = model.model_config
    if config.get("extra") != "forbid" or not config.get("strict"):
        raise TypeError(f"{model.__name__}: the fast path needs strict, extra='forbid'")
    if config.get("allow_inf_nan", True):
        raise TypeError(f"{model.__name__}: the fast path assumes allow_inf_nan=False")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    field_checks: list[tuple[str, Check]] = []
    item_checks: list[tuple[str, str, Check]] = []
    required_keys: dict[str, frozenset[str]] = {}
    forbidden: dict[str, tuple[_Forbidden, list[str], list[tuple[str, str]]]] = {}
    for name, info in model.model_fields.items():
        if name == "type":
            continue  # the struct's tag
        compiler = _Compiler()
        checks: list[Check] = []
        converted = compiler.convert(info.annotation, info.metadata, checks)
        field_checks.extend((name, c) for c in checks)
        item_checks.extend((name, key, c) for key, c in compiler.item_checks)
        if compiler.has_struct:
            if get_origin(info.annotation) is not list:
                raise TypeError(f"no fast path for {name}: structs only inside lists")
            required_keys[name] = compiler.required_keys
        if info.is_required():
            fields.append((name, converted))
        elif info.default_factory is None:
            fields.append((name, converted, info.default))
        else:
            fields.append((name, converted, msgspec.field(default_factory=info.default_factory)))
    for name, check in field_checks:
        if isinstance(check, _Forbidden):
            forbidden.setdefault(check.chars.pattern, (check, [], []))[1].append(name)
    for name, key, check in item_checks:
        if isinstance(check, _Forbidden) and key in required_keys[name]:
            forbidden.setdefault(check.chars.pattern, (check, [], []))[2].append((name, key))
    field_checks = [(n, c) for n, c in field_checks if not isinstance(c, _Forbidden)]
    item_checks = [
        (n, k, c)
        for n, k, c in item_checks
        if not (isinstance(c, _Forbidden) and k in required_keys[n])
    ]
    validators = model.__pydantic_decorators__
    if validators.field_validators or validators.root_validators:
        raise TypeError(f"{model.__name__}: no fast path for field or root validators")
    model_checks = []
    for decorator in validators.model_validators.values():
        if decorator.info.mode != "after":
            raise TypeError(f"{model.__name__}: only mode='after' model validators")
        model_checks.append(decorator.func)
    struct = msgspec.defstruct(
        f"Fast{model.__name__}",
        fields,
        bases=(FastEvent,),
        tag=model.event_type,
        kw_only=True,
        # The tag as a plain class attribute: read for every record, a property costs 4x.
        namespace={"type": model.event_type},
    )
    required = frozenset(
        name for name, info in model.model_fields.items() if info.is_required() and name != "type"
    )
    return _Compiled(
        struct, field_checks, item_checks, model_checks, list(forbidden.values()), required
    )


def _generate(compiled: _Compiled) -> Callable[[Any, "_Info"], None]:
    """Write the checks of one message type out as straight-line Python and compile it.

    A generic loop over the check lists cost about 3 us of interpreter time per message, as
    much as msgspec's whole decode of a click (dataclasses and attrs generate code for the
    same reason). Raises ``ValueError`` as the checks do; field names are Python identifiers
    (pydantic fields), the checks are passed in by name, never as source.
    """
    env: dict[str, Any] = {"_attrgetter": attrgetter, "_zip": zip, "_map": map, "_list": list}
    lines = ["def check(event, info):"]

    def bind(prefix: str, value: Any) -> str:
        name = f"_{prefix}{len(env)}"
        env[name] = value
        return name

    for forbidden, names, item_keys in compiled.forbidden:
        required = [n for n in names if n in compiled.required]
        lines.append(f"    values = [{', '.join(f'event.{n}' for n in required)}]")
        for n in names:
            if n not in compiled.required:
                lines += [f"    x = event.{n}", "    if x is not None:", "        values.append(x)"]
        for n, key in item_keys:
            lines.append(f"    values.extend(_map({bind('get', attrgetter(key))}, event.{n}))")
        lines.append(f"    {bind('forbidden', forbidden.check_all)}(values)")
    by_field: dict[str, list[Check]] = {}
    for n, check in compiled.field_checks:  # in order: a field's checks chain
        by_field.setdefault(n, []).append(check)
    for n, checks in by_field.items():
        indent = "    "
        lines.append(f"    x = event.{n}")
        if n not in compiled.required:
            lines.append("    if x is not None:")
            indent += "    "
        lines += [f"{indent}x = {bind('check', c)}(x, info)" for c in checks]
        lines.append(f"{indent}event.{n} = x")
    for n, key, check in compiled.item_checks:
        lines += [
            f"    items = event.{n}",
            f"    values = _list(_map({bind('get', attrgetter(key))}, items))",
            "    if values.count(None) != len(values):  # usually no item carries the key",
            "        for item, x in _zip(items, values, strict=True):",
            "            if x is not None:",
            f"                item.{key} = {bind('check', check)}(x, info)",
        ]
    lines += [f"    {bind('model', m)}(event)" for m in compiled.model_checks]
    if len(lines) == 1:
        lines.append("    pass")
    namespace: dict[str, Any] = {}
    source = "\n".join(lines)
    filename = f"<fast check {compiled.struct.__name__}>"
    exec(compile(source, filename, "exec"), env, namespace)
    check = namespace["check"]
    check.source = source  # for a reader in a debugger
    return check


class _NoMessage(FastEvent, tag="\x00no message"):
    """A union member no valid message matches (see :class:`FastDecoder`)."""


class FastDecoder:
    """Decodes the messages of one topic when they are valid; ``None`` means "ask pydantic".

    Returns structs with the events' attributes (``type``, ``occurred_at``, ...), not pydantic
    instances: the consumer flattens them straight away. Items of list fields (a search's
    results) stay structs, absent optional keys reading as None: turning them back into dicts
    cost more than the whole msgspec decode, and :mod:`schemas.clickstream` reads both shapes.
    """

    def __init__(self, messages: Iterable[type[Event]]) -> None:
        compiled = [compile_model(m) for m in messages]
        self._checks = {c.struct: c.check for c in compiled}
        # msgspec requires the tag of a tagged-union member, but not of a lone struct: with
        # one message type (the release topic) a message without "type" decoded. The
        # sentinel makes every topic a union.
        union = Union[(*(c.struct for c in compiled), _NoMessage)]
        self._decoder = msgspec.json.Decoder(union)

    def decode(self, raw: bytes, *, now: datetime | None = None) -> Any | None:
        """The valid event, or ``None``. ``now`` fixes the clock as in
        :func:`schemas.codec.decode`."""
        info = _NO_CONTEXT if now is None else _Info({"now": now})
        try:
            event = self._decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # deep nesting too
            return None
        check = self._checks.get(type(event))
        if check is None:  # the sentinel's tag
            return None
        try:
            check(event, info)
        except ValueError:
            return None
        return event
