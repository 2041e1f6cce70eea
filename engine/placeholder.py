"""What a dry run puts where an http step's response would be (``hookline run --dry-run``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class Placeholder:
    """Stands in for a response a dry run did not receive; any lookup on it is another placeholder.

    So that a dry run gets past ``when:`` and ``filter:`` conditions on such a response, a comparison
    with a placeholder is another (truthy) placeholder: the condition counts as true, and the value
    reads ``<response of pay.json.amount > 0>`` wherever it is shown. Arithmetic gives a placeholder too.
    """

    def __init__(self, label: str) -> None:
        self._label = label

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("_"):
            raise AttributeError(name)
        return Placeholder(f"{self._label}.{name}")

    def __getitem__(self, key: Any) -> Placeholder:
        return Placeholder(f"{self._label}[{key!r}]")

    def __str__(self) -> str:
        return f"<{self._label}>"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    __hash__ = object.__hash__

    def _op(symbol: str, reflected: bool = False) -> Callable[[Placeholder, Any], Placeholder]:  # type: ignore[misc]
        def method(self: Placeholder, other: Any) -> Placeholder:
            left, right = (other, self) if reflected else (self, other)
            return Placeholder(f"{_label_of(left)} {symbol} {_label_of(right)}")

        return method

    __eq__ = _op("==")  # type: ignore[assignment]
    __ne__ = _op("!=")  # type: ignore[assignment]
    __lt__, __le__, __gt__, __ge__ = _op("<"), _op("<="), _op(">"), _op(">=")
    __add__, __sub__, __mul__, __truediv__ = _op("+"), _op("-"), _op("*"), _op("/")
    __floordiv__, __mod__, __pow__ = _op("//"), _op("%"), _op("**")
    __radd__, __rsub__, __rmul__ = _op("+", True), _op("-", True), _op("*", True)
    __rtruediv__, __rfloordiv__, __rmod__, __rpow__ = _op("/", True), _op("//", True), _op("%", True), _op("**", True)
    del _op

    def __neg__(self) -> Placeholder:
        return Placeholder(f"-{self._label}")

    __pos__ = __abs__ = lambda self: self  # noqa: E731


def _label_of(value: Any) -> str:
    return value._label if isinstance(value, Placeholder) else repr(value)
