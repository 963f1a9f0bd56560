"""One way for test fixtures to be context managers: ``with X(...) as x:`` ends in ``x.close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """Subclasses say in :meth:`close` what ending them means (stop servers, remove files)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
