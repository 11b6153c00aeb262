"""Types of the C accelerator (_native_batch.c): the UDP hot loop."""

from collections.abc import Callable
from typing import Any

class NativeBatch:
    def __init__(
        self, family: int, capacity: int = 64, slot: int = 4096, flush_every: int = 16
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    def exchange(
        self,
        fd: int,
        handle: Callable[[int, bytes], bytes | None],
        tables: tuple[Any, ...] | None = None,
        /,
    ) -> tuple[int, int]: ...
    def raw_peer(self, index: int) -> bytes: ...
    def __buffer__(self, flags: int) -> memoryview: ...

def siphash24(key: bytes, message: bytes, /) -> bytes: ...
