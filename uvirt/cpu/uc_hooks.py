"""Unicorn hooks registered through the C API.

The binding's ``hook_add`` wraps every callback in two more Python frames (an exception
guard and an argument adapter): a third of an IN exit (benchmarks/bench_machine.py),
half of a TLB fill.  uvirt's hot hooks guard themselves (a host exception becomes a
HOST_ERROR stop), so they are registered with the binding's own function types and kept
in the binding's table, so ``hook_del`` and its lifetime rules work unchanged.  If the
pinned binding's internals ever move, ``fallback()`` (the ordinary ``hook_add`` path)
is used instead: same behaviour, slower.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from unicorn import UcError


def add_c_hook(uc, htype: int, cfunc_type: str, fn, fallback: Callable[[], int],
               begin: int = 1, end: int = 0, *extra: ctypes._SimpleCData) -> int:
    """``uc_hook_add(uc, htype, fn, NULL, begin, end, *extra)`` with ``fn`` called
    directly (its first argument is the raw engine handle).  -> the hook handle."""
    try:
        from unicorn.unicorn_py3 import unicorn as binding
        from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib
        ftype = getattr(binding, cfunc_type, None)
        if ftype is None:
            from unicorn.unicorn_py3.arch import intel
            ftype = getattr(intel, cfunc_type)
        callbacks = uc._callbacks
        uch = uc._uch
    except (ImportError, AttributeError):
        return fallback()
    fptr = ftype(fn)
    handle = uc_hook_h()
    status = uclib.uc_hook_add(uch, ctypes.byref(handle), htype, fptr, None,
                               ctypes.c_uint64(begin), ctypes.c_uint64(end), *extra)
    if status != 0:
        raise UcError(status)
    callbacks[handle.value] = fptr
    return handle.value


def hook_failure(uc) -> Callable[[BaseException], None]:
    """What a callback registered through the C API does with an exception: keep it for
    ``emu_start`` to raise, as the binding does, and stop the CPU."""
    def failed(e: BaseException) -> None:
        if getattr(uc, "_hook_exception", None) is None:
            uc._hook_exception = e
        uc.emu_stop()
    return failed


def map_mmio(uc, address: int, size: int, read_cb, write_cb, *, raw: bool = False) -> None:
    """``uc.mmio_map(address, size, read_cb, None, write_cb, None)`` with the callbacks
    called directly: the binding's per-access wrapper (a decorator frame, its own
    callback frame and the handle's conversion) cost about 0.7 us of a 1.2 us MMIO access
    (benchmarks/irq_breakdown.py).  Same contract: the callbacks get the ``Uc`` first and
    ``None`` as user data; an exception is kept for ``emu_start`` to raise, as the binding
    does, after stopping the CPU (a read answers 0).

    ``raw=True``: the callbacks already have the engine's signature (``read(handle,
    offset, size, user_data)``, ``write(handle, offset, size, value, user_data)``) and
    guard themselves with ``hook_failure(uc)``, so Unicorn calls them with no frame in
    between (the hot MMIO windows: every frame is 60-100 ns of an interrupt round trip)."""
    try:
        from unicorn.unicorn_py3.unicorn import MMIO_READ_CFUNC, MMIO_WRITE_CFUNC, uclib
        callbacks = uc._mmio_callbacks
        uch = uc._uch
        uc._hook_exception                  # noqa: B018 - the binding keeps exceptions here
    except (ImportError, AttributeError):
        if raw:
            uc.mmio_map(address, size,
                        lambda _uc, off, width, ud: read_cb(None, off, width, ud), None,
                        lambda _uc, off, width, value, ud: write_cb(None, off, width, value, ud),
                        None)
        else:
            uc.mmio_map(address, size, read_cb, None, write_cb, None)
        return

    if raw:
        read, write = read_cb, write_cb
    else:
        failed = hook_failure(uc)

        def read(_handle, offset, width, _ud):
            try:
                return read_cb(uc, offset, width, None)
            except BaseException as e:
                failed(e)
                return 0

        def write(_handle, offset, width, value, _ud):
            try:
                write_cb(uc, offset, width, value, None)
            except BaseException as e:
                failed(e)

    rf, wf = MMIO_READ_CFUNC(read), MMIO_WRITE_CFUNC(write)
    status = uclib.uc_mmio_map(uch, ctypes.c_uint64(address), ctypes.c_size_t(size), rf, None, wf, None)
    if status != 0:
        raise UcError(status)
    callbacks[(address, address + size)] = (rf, wf)     # kept alive; mem_unmap drops them
