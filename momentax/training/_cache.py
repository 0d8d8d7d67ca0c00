"""A cache keyed weakly on user objects: an entry lives as long as its keys do.

``fit`` reuses its compiled loop across calls with the same loss, optimizer,
record functions and placement. Keying a ``jax.jit`` on them as static
arguments would keep every one alive for the life of the process; here each
entry is keyed on the identities of the objects (looking through tuples such
as an Optax ``GradientTransformation`` and through bound methods) and dropped
as soon as any of them is garbage collected.
"""

import types
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Uncacheable(Exception):
    """An object that can neither be weakly referenced nor compared by value."""


def _atoms(obj: Any, key: list[Any], alive: list[Any]) -> None:
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        key.append((type(obj), obj))
    elif isinstance(obj, types.MethodType):  # A new object at every attribute read.
        key.append(types.MethodType)
        _atoms(obj.__self__, key, alive)
        _atoms(obj.__func__, key, alive)
    elif isinstance(obj, tuple):  # NamedTuples (optimizers) hold no weakrefs.
        key.append((type(obj), len(obj)))
        for item in obj:
            _atoms(item, key, alive)
    else:
        try:
            weakref.ref(obj)
        except TypeError:
            raise _Uncacheable from None
        key.append(id(obj))
        alive.append(obj)


class WeakCache(Generic[T]):
    """Maps tuples of objects to values, forgetting an entry when a key dies."""

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], T] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self, objects: tuple[Any, ...], build: Callable[[], T], values: Hashable = ()
    ) -> T:
        """Returns the value for ``objects`` (and ``values``), built on first use.

        ``build`` must not keep references to ``objects`` in what it returns
        (that would keep them alive). Objects that admit no weak reference get a
        fresh, uncached value. ``values`` is compared by value and kept.
        """
        key: list[Any] = [values]
        alive: list[Any] = []
        try:
            _atoms(objects, key, alive)
        except _Uncacheable:
            return build()
        frozen = tuple(key)
        if frozen not in self._entries:
            self._entries[frozen] = build()
            for obj in {id(o): o for o in alive}.values():
                # Runs before the object's id can be reused by another object.
                weakref.finalize(obj, self._entries.pop, frozen, None)
        return self._entries[frozen]
