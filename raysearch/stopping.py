"""Stopping on SIGTERM: a supervisor's stop ends a job's or search's MLflow runs KILLED with the
reason, through the same path as Ctrl-C, instead of leaving them RUNNING."""

from __future__ import annotations

import signal
import threading

#: The ``raysearch.error`` of a job or search ended by SIGTERM.
STOPPED_BY_SIGTERM = "stopped by SIGTERM"


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised as an interrupt so that the Ctrl-C path closes the runs."""


class SigtermGuard:
    """Turns SIGTERM into :class:`Stopped` while a job or a search runs, so that its MLflow runs
    end KILLED with ``raysearch.error`` = :data:`STOPPED_BY_SIGTERM` instead of staying RUNNING.

    Use it as a context manager: :meth:`arm` installs the handler (after ``ray.init``, which
    installs its own), :meth:`defer` turns a later SIGTERM into a note (``received``) so that
    the runs' clean-up finishes first, and leaving the block restores the previous handler.
    Outside the main thread (a trial driver inside Ray Tune) Python cannot handle signals:
    nothing is installed there.
    """

    def __init__(self) -> None:
        self.received = False
        self._raised = False
        self._raising = False
        self._previous = None
        self._installed = False

    @property
    def reason(self) -> str | None:
        """:data:`STOPPED_BY_SIGTERM` once a SIGTERM arrived, else None."""
        return STOPPED_BY_SIGTERM if self.received else None

    def arm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if not self._installed:
            previous = signal.signal(signal.SIGTERM, self._handle)
            self._previous = signal.SIG_DFL if previous is None else previous
            self._installed = True
        self._raising = True

    def defer(self) -> None:
        self._raising = False

    def _handle(self, signum, frame) -> None:
        self.received = True
        if self._raising:
            self._raising = False  # once: a second SIGTERM during the clean-up is only noted
            self._raised = True
            raise Stopped(STOPPED_BY_SIGTERM)

    def __enter__(self) -> SigtermGuard:
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        self._raising = False
        if self.received and not self._raised and exc_type is None:
            raise Stopped(STOPPED_BY_SIGTERM)  # noted during the clean-up only: stop now
