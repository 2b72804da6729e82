"""Unicorn's C API called directly: hooks, MMIO windows and controls.

The binding's ``hook_add`` wraps every callback in two more Python frames (an exception
guard and an argument adapter): a third of an IN exit (benchmarks/bench_machine.py),
half of a TLB fill.  uvirt's hot hooks guard themselves (a host exception becomes a
HOST_ERROR stop), so they are registered with the binding's own function types and kept
in the binding's table, so ``hook_del`` and its lifetime rules work unchanged.  If the
pinned binding's internals ever move, ``fallback()`` (the ordinary ``hook_add`` path)
is used instead: same behaviour, slower.

The binding's internals are looked up once, when this module is imported (``CAPI``):
looking them up per call (an import statement and a failing ``getattr`` each) cost
about a third of every machine's eight hooks, which a boot pays on every creation.
"""
from __future__ import annotations

import ctypes
from typing import Callable

from unicorn import UcError


class CApi:
    """What uvirt takes from the pinned binding's internals, resolved once; ``lib`` is
    None if they moved (every caller then takes the binding's public path)."""

    def __init__(self) -> None:
        try:
            from unicorn.unicorn_py3 import unicorn as binding
            from unicorn.unicorn_py3.arch import intel
            self.lib = binding.uclib
            self.hook_h = binding.uc_hook_h
            self.mmio_read, self.mmio_write = binding.MMIO_READ_CFUNC, binding.MMIO_WRITE_CFUNC
            # the hook function types uvirt registers, by the binding's names
            self.ftypes = {name: getattr(binding, name, None) or getattr(intel, name)
                           for name in ("HOOK_INTR_CFUNC", "HOOK_MEM_INVALID_CFUNC",
                                        "HOOK_TLB_FILL_CFUNC", "HOOK_INSN_IN_CFUNC",
                                        "HOOK_INSN_OUT_CFUNC")}
        except (ImportError, AttributeError):
            self.lib = None
            self.ftypes = {}


CAPI = CApi()


def engine(uc):
    """The engine handle behind a binding ``Uc`` for the C API, or None (binding moved)."""
    if CAPI.lib is None:
        return None
    return getattr(uc, "_uch", None)


def add_c_hook(uc, htype: int, cfunc_type: str, fn, fallback: Callable[[], int],
               begin: int = 1, end: int = 0, *extra: ctypes._SimpleCData) -> int:
    """``uc_hook_add(uc, htype, fn, NULL, begin, end, *extra)`` with ``fn`` called
    directly (its first argument is the raw engine handle).  -> the hook handle."""
    return add_c_hooks(uc, htype, cfunc_type, fn, lambda _b, _e: fallback(), ((begin, end),),
                       *extra)[0]


def add_c_hooks(uc, htype: int, cfunc_type: str, fn, fallback: Callable[[int, int], int],
                ranges, *extra: ctypes._SimpleCData) -> list[int]:
    """``add_c_hook`` for each ``(begin, end)`` of ``ranges``, all through one C function
    pointer (each costs a libffi closure to make); ``fallback(begin, end)`` is the
    binding's path for one range.  -> the hook handles."""
    ftype = CAPI.ftypes.get(cfunc_type)
    try:
        callbacks = uc._callbacks
        uch = uc._uch
    except AttributeError:
        ftype = None
    if ftype is None:
        return [fallback(begin, end) for begin, end in ranges]
    fptr = ftype(fn)
    handles = []
    for begin, end in ranges:
        handle = CAPI.hook_h()
        status = CAPI.lib.uc_hook_add(uch, ctypes.byref(handle), htype, fptr, None, begin, end,
                                      *extra)
        if status != 0:
            raise UcError(status)
        callbacks[handle.value] = fptr      # kept alive while any of its hooks is
        handles.append(handle.value)
    return handles


def ctl(uc, code: int, *args) -> None:
    """``uc_ctl(uc, code, *args)``: the binding's ``ctl_*`` methods spend several
    microseconds each encoding their arguments in Python (three of them run at every
    machine's creation, and the TLB flush at every first fetch from a page)."""
    uch = engine(uc)
    if uch is None:
        uc.ctl(code & 0x3FFFFFF, code >> 30, *args)     # the binding encodes it again
        return
    status = CAPI.lib.uc_ctl(uch, code, *args)
    if status != 0:
        raise UcError(status)


def ctl_code(control: int, io: int, nargs: int) -> int:
    """``UC_CTL_READ/WRITE(control, nargs)`` (unicorn.h): what ``ctl`` takes."""
    return (io << 30) | (nargs << 26) | control


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
        if CAPI.lib is None:
            raise AttributeError("the binding's internals moved")
        callbacks = uc._mmio_callbacks
        uch = uc._uch
        uc._hook_exception                  # noqa: B018 - the binding keeps exceptions here
    except AttributeError:
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

    rf, wf = CAPI.mmio_read(read), CAPI.mmio_write(write)
    status = CAPI.lib.uc_mmio_map(uch, ctypes.c_uint64(address), ctypes.c_size_t(size), rf, None, wf, None)
    if status != 0:
        raise UcError(status)
    callbacks[(address, address + size)] = (rf, wf)     # kept alive; mem_unmap drops them
