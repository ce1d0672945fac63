"""A pydantic validation error as the one line a user acts on: file, field, what is allowed."""

from __future__ import annotations

import ipaddress
import re
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

MAX_SHOWN = 80  # characters of a user's value quoted back
# A DNS name nginx takes as server_name: labels of 1-63 letters, digits or inner '-'.
HOST = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
# An nginx location prefix: no spaces, quotes, braces, ';' or '#' that would break its config.
INGRESS_PATH = r"^/[A-Za-z0-9._~/-]{0,200}$"
# A Docker image reference: [registry[:port]/]path[:tag][@sha256:digest].
IMAGE_REF = (r"^(?=.{1,255}$)([a-z0-9.-]+(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*"
             r"(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
             r"(@sha256:[a-f0-9]{64})?$")
ROLE = r"^[a-z][a-z0-9-]{0,30}$"
# A Kubernetes label key ([prefix/]name) and value.
LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
LABEL_KEY = rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{LABEL_NAME}$"
LABEL_VALUE = rf"^({LABEL_NAME})?$"


def short(value: object) -> str:
    """repr() of a user's value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def _field(model: type[BaseModel], name: object) -> FieldInfo | None:
    for key, info in model.model_fields.items():
        if name in (key, info.alias):
            return info
    return None


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds directly or in a list/dict (its last such argument)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in reversed(get_args(annotation)):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _walk(model: type[BaseModel], loc: tuple[int | str, ...]) -> FieldInfo | None:
    """The last named field along `loc` (list indices and mapping keys are skipped)."""
    current: type[BaseModel] | None = model
    last: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if last is not None:
            current = _inner_model(last.annotation)
            if current is None:  # a key of a plain mapping: stay on that field
                continue
        assert current is not None
        found = _field(current, part)
        if found is None:
            return None
        last = found
    return last


def _holder(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model whose fields are valid at `loc`."""
    last = _walk(model, loc)
    return (_inner_model(last.annotation) if last is not None else None) or model


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if origin is list:
        return f"a list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        k, v = get_args(annotation)
        return f"a mapping of {_type_name(k)} to {_type_name(v)}"
    names = {int: "an integer", str: "a string", float: "a number", bool: "true | false",
             type(None): "null"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of " + ", ".join(_field_names(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or key for key, info in model.model_fields.items()]


def _constraints(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        for attr, label in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"),
                            ("min_length", "length >="), ("max_length", "length <="),
                            ("pattern", "matching")):
            value = getattr(m, attr, None)
            if value is not None:
                parts.append(f"{label} {value}")
    return ", ".join(parts)


def allowed(model: type[BaseModel], error: dict[str, Any]) -> str:
    """What the field at the error's location accepts, in words a user can copy."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return "the fields " + ", ".join(_field_names(_holder(model, loc[:-1])))
    if error["type"] == "literal_error" and "expected" in error.get("ctx", {}):
        return str(error["ctx"]["expected"])
    if error["type"] in ("model_type", "model_attributes_type"):
        return "a mapping of " + ", ".join(_field_names(_holder(model, loc)))
    info = _walk(model, loc)
    if info is None:
        return ""
    text = _type_name(info.annotation)
    extra = _constraints(info)
    return f"{text} ({extra})" if extra else text


def one_line(model: type[BaseModel], where: object, e: ValidationError) -> str:
    """`WHERE: FIELD: what is wrong; allowed: ...` for the first error."""
    first = e.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    msg = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    if first["type"] == "literal_error":  # pydantic lists the choices; say it as `allowed`
        msg = "not one of the choices"
    value = first.get("input")
    if first["type"] != "extra_forbidden" and isinstance(value, str | int | float | bool):
        msg += f" (got {short(value)})"
    if "allowed:" not in msg:
        ok = allowed(model, dict(first))
        if not ok:  # e.g. a key that is not a string: name the fields that are valid there
            holder = _holder(model, tuple(first["loc"])[:-1])
            ok = "the fields " + ", ".join(_field_names(holder))
        msg += f"; allowed: {ok}"
    return f"{where}: {field}: {msg}" if field else f"{where}: {msg}"


def ipv4_network(value: str) -> str:
    """A CIDR as `a.b.c.d/n`: IPv4 (the cluster is IPv4-only), no host bits set."""
    try:
        return str(ipaddress.IPv4Network(value))
    except ValueError:
        raise ValueError(f"{short(value)} is not an IPv4 network; allowed: an IPv4 CIDR with "
                         "no host bits set, e.g. 10.244.0.0/16") from None


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Labels and selectors as Kubernetes takes them."""
    for key, value in labels.items():
        if not re.match(LABEL_KEY, key):
            raise ValueError(f"label key {short(key)} is not valid; allowed: [PREFIX/]NAME, "
                             "NAME of 1-63 letters, digits, '-', '_' or '.'")
        if not re.match(LABEL_VALUE, value):
            raise ValueError(f"label {key}: value {short(value)} is not valid; allowed: up to "
                             "63 letters, digits, '-', '_' or '.', starting and ending with a "
                             "letter or digit")
    return labels


def check_images(images: dict[str, str], prefix: str) -> None:
    """Image overrides: a role name and a Docker image reference each."""
    for role, ref in images.items():
        if not re.match(ROLE, role):
            raise ValueError(f"{prefix}{short(role)} is not a role name; allowed: {ROLE}")
        if not re.match(IMAGE_REF, ref):
            raise ValueError(f"{prefix}{role}: {short(ref)} is not an image reference; "
                             "allowed: [REGISTRY/]NAME[:TAG][@sha256:DIGEST], lowercase name, "
                             "e.g. docker.io/flannel/flannel:v0.28.1")
