"""Lazy, reversible, idempotent patching on wrapt's post-import hooks.

An ``Instrumentor`` names its target module; ``instrument()`` registers a hook that patches the
module when (or if already) it is imported, so importing tracekit never imports the target.
``uninstrument()`` restores an attribute only if it still holds the exact wrapper put there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import wrapt

from tracekit._runtime.guard import report_once

Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(slots=True)
class Patch:
    """One attribute replaced by a wrapt wrapper."""

    owner: Any
    attribute: str
    # The wrapt.FunctionWrapper put in place. Typed Any: wrapt 2's stubs declare it a descriptor,
    # so a field of that type would read as already bound to the Patch.
    wrapper: Any = None
    # wrapt's ``enabled``: true while live. A list, emptied by ``undo``: wrapt reads it in C on
    # every call and calls the original past a disabled wrapper, with no frame of ours between.
    live: list[bool] = field(default_factory=lambda: [True])

    def undo(self) -> None:
        """Restore the original, unless someone else has wrapped over us since.

        In that case the wrapper stays in their chain but turns into a plain pass-through, so an
        uninstrumented tracekit never traces again whatever order the patches are removed in.
        """
        self.live.clear()
        current = self.owner.__dict__.get(self.attribute)
        # Someone who unwrapped a layer above ours through getattr() put back our wrapper bound
        # to the class (wrapt's BoundFunctionWrapper, whose parent is ours): that is ours too.
        ours = self.wrapper
        if ours is None:
            return
        original = ours.__wrapped__
        if current is ours or getattr(current, "_self_parent", None) is ours:
            setattr(self.owner, self.attribute, original)


class Instrumentor:
    """Base of every library instrumentation: subclasses set ``target`` and implement ``patch``."""

    target: ClassVar[str]
    # A pull API's open deliveries (``messaging.HeldDeliveries``): ended when uninstrumented,
    # or their spans would stay open and their correlation IDs current for good.
    held: ClassVar[Any] = None
    # The instance of each subclass asked to instrument last (see ``latest_active``).
    _latest: ClassVar[Instrumentor | None] = None

    def __init__(self) -> None:
        self._enabled = False
        self._hooked = False
        self._patches: list[Patch] = []

    @property
    def active(self) -> bool:
        """True while the target library is patched."""
        return bool(self._patches)

    @classmethod
    def latest_active(cls) -> bool:
        """Whether the instance of this instrumentor asked to instrument last is active: what
        a hook an earlier instance left in the library asks (a consumer callback registered, a
        session made, before ``tracekit.shutdown()`` and ``init()`` again), so that it traces
        again once tracekit is instrumented anew, rather than staying silent for good."""
        latest = cls._latest
        return latest is not None and latest.active

    def instrument(self) -> None:
        """Patch the target now if imported, else on import. Calling it twice is harmless."""
        if self._enabled:
            return
        self._enabled = True
        type(self)._latest = self
        if not self._hooked:
            self._hooked = True
            wrapt.register_post_import_hook(self._on_import, self.target)
        elif self.target in sys.modules:
            self._on_import(sys.modules[self.target])

    def uninstrument(self) -> None:
        """Undo every patch this instrumentor made."""
        self._enabled = False
        for patch in reversed(self._patches):
            patch.undo()
        self._patches = []
        if self.held is not None:
            self.held.release_all()

    def record_awaiting(self) -> None:
        """Record, outcome unknown, the sends whose delivery's outcome has not come yet (the
        process is about to end without exit hooks). Most libraries keep none."""

    def patch(self, module: ModuleType) -> None:
        """Apply the patches to the freshly imported ``module`` (use ``wrap``)."""
        raise NotImplementedError

    def wrap(self, owner: Any, attribute: str, wrapper: Wrapper) -> None:
        """Replace ``owner.attribute`` with a wrapt wrapper calling ``wrapper``."""
        original = owner.__dict__[attribute]
        if isinstance(original, staticmethod | classmethod):
            raise TypeError("tracekit does not wrap static or class methods")
        patch = Patch(owner, attribute)
        # (a list's truth is its length, which the stubs' __bool__ protocol does not cover)
        enabled: Any = patch.live
        patch.wrapper = wrapt.FunctionWrapper(original, wrapper, enabled=enabled)
        setattr(owner, attribute, patch.wrapper)
        self._patches.append(patch)

    def _on_import(self, module: ModuleType) -> None:
        if not self._enabled or self._patches:
            return
        try:
            self.patch(module)
        except Exception as error:
            report_once(f"instrumenting {self.target}", error)
            self.uninstrument()
            self._enabled = True  # stays requested; a failed patch is not retried on every import
