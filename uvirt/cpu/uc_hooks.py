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
