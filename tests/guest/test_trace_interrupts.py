"""Regression: tracing a guest that takes an interrupt.  Machine._deliver emits an
``interrupt`` trace event that trace.EVENTS did not declare, so any traced run with an
interrupt (the pytest plugin traces every run) stopped with a KeyError."""

from uvirt.testing.guest_tests import run_guest


def test_traced_run_with_interrupts(firmware):
    run = run_guest(firmware("irq_msi"), trace_tail=400)
    assert run.exit_code == 1, run.stop.report()
    assert any(line.startswith("interrupt vector=0x") for line in run.trace_tail)


def test_an_msi_round_trip_is_traced_in_order(firmware):
    """The engine's interrupt path keeps every guest-visible access a declared event:
    the MSI store, the interrupt the CPU takes (from the acknowledge callback), the
    handler's EOI store (MMIO callbacks are called by Unicorn with no wrapper frame)."""
    run = run_guest(firmware("irq_msi"), trace_tail=400)
    assert run.exit_code == 1, run.stop.report()
    want = iter(["mmio 0xfee00000 size=4 <- 0x4a", "interrupt vector=0x4a hardware",
                 "mmio 0xfee000b0 size=4 <- 0x0"])
    step = next(want)
    for line in run.trace_tail:
        if line.startswith(step):
            step = next(want, None)
            if step is None:
                break
    assert step is None, (step, run.trace_tail)

