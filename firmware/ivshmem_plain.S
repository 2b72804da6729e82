# ivshmem_plain.S - ivshmem-plain as a guest sees it.  Run with
#   -object memory-backend-file,id=m,size=1M,share=on,mem-path=FILE -device ivshmem-plain,memdev=m
# (FILE filled by the host with byte i = (i*13+7) & 0xff), or a -ram / -memfd backend.
#
# Prints (numbers in hex, no 0x; "FW " lines are firmware-chosen and not compared):
#   FN bb:dd.f | CFG oo xxxxxxxx (dwords 00, 08, 0c, 2c, 34) | PIN | FW CMD | STATUS
#   CAP oo d0 d1 d2 (each capability) | FW BARn raw | BARn lo hi (sized, decode off)
#   CMD on | SHM size
#   R32/R8/R16 oo value: BAR0 reads; W32/W16/W8 oo value: the write that follows
#   U32 02: an unaligned dword read; MEM offset value: shared memory as the host left
#   it; MEMSUM: dword sum of its first 64 KiB; then the guest pattern (GUEST WROTE),
#   which the host checks byte for byte in FILE after the run.
.include "uvirt.inc"
.include "ivshmem.inc"

main:
    call ivs_find
    REQUIRE_FOUND "FAIL: no ivshmem device"
    call ivs_ident
    call ivs_regs
    PUTSN "W32 0c 00000000 (doorbell, no peers)"
    IVS_W32 0x0c, 0
    IVS_R32 0x04
    call ivs_mem_host
    call ivs_mem_guest
    PUTSN "DONE"
    ret
