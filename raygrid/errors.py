"""The one property raygrid's own exceptions share: they cross process boundaries intact, and
the ones that a retry cannot fix say so.

A trial's exception travels from its Train worker to the Train controller, the Tune driver and
the Tune controller, each time through pickle. Python pickles an exception as
`cls(*exc.args)`, so a class whose `__init__` takes other arguments than its message
(`ImageDecodeError(path, reason)`) cannot be rebuilt: Ray then hands on a `TypeError: __init__()
missing ...` instead of the error, and the file and line it named are lost. `Picklable` rebuilds
the exception from its args and attributes without calling `__init__`.

`PermanentError` marks a problem with a trial's input — a corrupt image, a label file that does
not parse, a missing weights file, a checkpoint that does not fit:
running the trial again gives the same error, so the trial driver ends such a trial as failed
instead of letting Tune retry it (raygrid.run.failures). Crashes and lost nodes stay retryable.

Torch-free and dependency-free: the data readers, the space loader and the stage loops import it.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    exc = _allocate(cls, args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _allocate(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """A bare instance of `cls`. `cls.__new__` is the first built-in base's in the MRO, which is
    not the one Python accepts when a class mixes exception types with different layouts
    (MissingImageError is a ValueError and a FileNotFoundError): try them in MRO order."""
    for base in cls.__mro__:
        if base.__module__ == "builtins" and issubclass(base, BaseException):
            try:
                return base.__new__(cls, *args)
            except TypeError:
                continue
    raise TypeError(f"cannot rebuild {cls.__qualname__}")


TRACEBACK_ATTR = "raised_at"  # the traceback text an exception carries across processes


class Picklable(Exception):
    """Pickles as (class, args, attributes), whatever the class's `__init__` takes. A raised
    exception also takes its traceback along as text (`raised_at`): pickle drops
    `__traceback__`, and the copy Ray Train keeps is not reliable (it can hold no frame at all),
    so the file and line it was raised at would be lost."""

    def __reduce__(self):
        state = dict(self.__dict__)
        if self.__traceback__ is not None and TRACEBACK_ATTR not in state:
            import traceback

            state[TRACEBACK_ATTR] = "".join(traceback.format_exception(type(self), self, self.__traceback__))
        return _rebuild, (type(self), self.args, state)


class PermanentError(Picklable):
    """An error a retry cannot fix (bad data or configuration, a deterministic failure): the trial
    fails at once and is not retried."""
