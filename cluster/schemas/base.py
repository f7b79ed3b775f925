"""Shared pieces of every schema: the base class, name patterns, UTC time.

Every ``Schema`` refuses NaN and +/-Infinity: typed float fields through pydantic's
``allow_inf_nan=False``, and free-form fields (``Any``, ``dict[str, Any]``, ...) through one
walk of their values after validation. A refused number is a ``ValidationError`` whose
location names the field, e.g. ``metrics.recall_at_1`` or ``args.x.0``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
NON_FINITE = "NaN/Infinity is not allowed"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Unchecked:
    """Marks a free-form field whose value is a model's output, not user input: a model
    may answer NaN, and that is its answer to pass on (JSON writes it as null)."""


ModelOutput = Annotated[Any, _Unchecked()]


def non_finite_path(value: Any) -> list[Any] | None:
    """Where in ``value`` a NaN or infinity sits (keys and indexes, outermost first)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        # The usual prediction is a list of strings: skip them without a call each.
        items = ((i, v) for i, v in enumerate(value) if not isinstance(v, str))
    elif isinstance(value, BaseModel) and not isinstance(value, Schema):
        items = value.__dict__.items()  # a foreign model (the trainer's): no walk of its own
    else:
        return None
    for key, item in items:
        if isinstance(item, (str, int, bool)) or item is None:
            continue
        path = non_finite_path(item)
        if path is not None:
            return [key, *path]
    return None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: for numbers that modelyard
    measured itself (a diverged loss, an unbounded p99), which are recorded, not refused.
    ``value`` itself when it holds none: nothing is copied."""
    return value if non_finite_path(value) is None else _nulled(value)


def _nulled(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _nulled(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nulled(v) for v in value]
    return value


def _free_form(annotation: Any) -> bool:
    """Whether values of this type can hold numbers that pydantic does not check."""
    if annotation in (Any, object, dict, list, tuple):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return not issubclass(annotation, Schema)
    if get_origin(annotation) is Annotated:
        return _free_form(get_args(annotation)[0])
    return any(_free_form(arg) for arg in get_args(annotation))


class Schema(BaseModel):
    model_config = ConfigDict(
        extra="forbid", use_enum_values=True, validate_default=True, allow_inf_nan=False
    )
    # Names of the fields walked for NaN/Infinity, worked out once per class.
    _free_form_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._free_form_fields = tuple(
            name
            for name, field in cls.model_fields.items()
            if not any(isinstance(m, _Unchecked) for m in field.metadata)
            and _free_form(field.annotation)
        )

    @model_validator(mode="after")
    def _refuse_non_finite(self) -> Schema:
        for name in self._free_form_fields:
            path = non_finite_path(getattr(self, name))
            if path is not None:
                error = PydanticCustomError("finite_number", NON_FINITE)
                raise ValidationError.from_exception_data(
                    type(self).__name__,
                    [InitErrorDetails(type=error, loc=(name, *path), input=getattr(self, name))],
                )
        return self
