# cpu_memory.S - what the CPU's TLB handling (uvirt/cpu/tlb.py) must never change:
# stores and loads, code written and then run (self-modifying code on pages that were
# data first, and on pages that hold code and data), and paging turned on (identity
# map plus an alias at 0x80000000, 4 MiB pages) and off again.  uvirt fills the TLB
# itself while paging is off and hands it to Unicorn's x86 MMU while paging is on; a
# guest must see exactly what it sees on QEMU (tests/guest/test_cpu_memory.py).
.include "uvirt.inc"
.include "irq.inc"

.set CODEPG, 0x300000       # a page only ever written as data before code lands there
.set DATAPG, 0x301000
.set FRESHPG, 0x302000      # code written through the alias while paging is on
.set OTHERPG, 0x303000      # run once: a page's first run makes uvirt drop its whole TLB
.set PGDIR, 0x310000        # page directory (4 KiB aligned)
.set ALIAS, 0x80000000      # virtual alias of physical 0 .. 4 MiB
.set APICWIN, 0xFEE00000    # the local APIC's page (Unicorn fills its TLB entry itself)
.set APICRAM, 0x600000      # what the page tables put at APICWIN while paging is on

.set OP_MOV_EAX, 0xB8       # mov eax, imm32
.set OP_RET, 0xC3

# put "mov eax, \imm; ret" at \addr (byte stores, as a loader would)
.macro EMIT_RET_IMM addr, imm
    mov byte ptr [\addr], OP_MOV_EAX
    mov dword ptr [\addr + 1], \imm
    mov byte ptr [\addr + 5], OP_RET
.endm

soft_handler:
    ret

main:
    call idt_setup
    mov eax, 0x80
    mov edx, soft_handler
    call irq_set_handler
    PUTSN "-- data: stores and loads"
    # fill DATAPG with i*3, then sum it back: 1024 dwords
    mov edi, DATAPG
    xor ecx, ecx
fill_loop:
    lea eax, [ecx + ecx*2]
    mov [edi + ecx*4], eax
    inc ecx
    cmp ecx, 1024
    jne fill_loop
    xor eax, eax
    xor ecx, ecx
sum_loop:
    add eax, [edi + ecx*4]
    inc ecx
    cmp ecx, 1024
    jne sum_loop
    REPORT_EQ eax, 1571328, "sum of 1024 stored dwords"
    # read-modify-write on memory
    mov dword ptr [DATAPG + 0x800], 0
    mov dword ptr [DATAPG + 0x804], 0
    mov ecx, 1000
rmw_loop:
    inc dword ptr [DATAPG + 0x800]
    add dword ptr [DATAPG + 0x804], 3
    dec ecx
    jnz rmw_loop
    REPORT_EQ [DATAPG + 0x800], 1000, "inc dword [mem] x1000"
    REPORT_EQ [DATAPG + 0x804], 3000, "add dword [mem], 3 x1000"

    PUTSN "-- code written into a page that was data"
    mov edi, CODEPG
    mov ecx, 1024
    xor eax, eax
    rep stosd                               # many plain stores first
    EMIT_RET_IMM CODEPG, 0x11111111
    mov eax, CODEPG
    call eax
    REPORT_EQ eax, 0x11111111, "runs what was stored"
    mov dword ptr [CODEPG + 1], 0x22222222
    mov eax, CODEPG
    call eax
    REPORT_EQ eax, 0x22222222, "sees its immediate rewritten"

    PUTSN "-- code and data on one page"
    mov ecx, 500
mixed_loop:
    mov [CODEPG + 0x800], ecx              # data next to code that has run
    add dword ptr [CODEPG + 0x804], 2
    dec ecx
    jnz mixed_loop
    REPORT_EQ [CODEPG + 0x804], 1000, "data beside code: 500 read-modify-writes"
    mov dword ptr [CODEPG + 1], 0x33333333
    mov eax, CODEPG
    call eax
    REPORT_EQ eax, 0x33333333, "code beside data rewritten and run"
    EMIT_RET_IMM OTHERPG, 0x3C3C3C3C
    mov eax, OTHERPG
    call eax
    REPORT_EQ eax, 0x3C3C3C3C, "code on another fresh page"
    mov [CODEPG + 0x800], eax               # data first, then the code: once a page held
    mov dword ptr [CODEPG + 1], 0x3D3D3D3D  # code every store must check for it
    mov eax, CODEPG
    call eax
    REPORT_EQ eax, 0x3D3D3D3D, "code page rewritten after a data access refilled its TLB entry"

    PUTSN "-- the local APIC's page: loads and stores alternating"
    REPORT_EQ [APICWIN + 0x30], 0x50014, "APIC version register"
    mov dword ptr [APICWIN + 0x80], 0x20    # TPR
    REPORT_EQ [APICWIN + 0x80], 0x20, "TPR reads what was stored"
    mov dword ptr [APICWIN + 0x80], 0
    REPORT_EQ [APICWIN + 0x80], 0, "TPR stored again"
    mov dword ptr [APICRAM + 0x30], 0x13572468

    PUTSN "-- paging on: identity 0-4 MiB and an alias at 0x80000000"
    mov edi, PGDIR
    mov ecx, 1024
    xor eax, eax
    rep stosd
    mov dword ptr [PGDIR], 0x83             # 4 MiB page: present, writable
    mov dword ptr [PGDIR + 0x800], 0x83      # entry 0x200: virtual 0x80000000
    mov dword ptr [PGDIR + 0x3FB * 4], 0x400083  # virtual 0xFEC00000: RAM at 4 MiB
    mov eax, PGDIR
    mov cr3, eax
    mov eax, cr4
    or eax, 0x10                            # PSE
    mov cr4, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax
    jmp paging_on
paging_on:
    mov eax, cr0
    shr eax, 31
    REPORT_EQ eax, 1, "CR0.PG reads 1"
    REPORT_EQ [ALIAS + DATAPG + 0x804], 3000, "alias reads what the identity map wrote"
    mov dword ptr [ALIAS + DATAPG + 0x808], 0x5A5A1234
    REPORT_EQ [DATAPG + 0x808], 0x5A5A1234, "identity map reads what the alias wrote"
    mov dword ptr [ALIAS + CODEPG + 1], 0x44444444
    mov eax, CODEPG
    call eax
    REPORT_EQ eax, 0x44444444, "code rewritten through the alias, run at its identity address"
    mov eax, ALIAS + CODEPG
    call eax
    REPORT_EQ eax, 0x44444444, "the same code run through the alias"
    EMIT_RET_IMM ALIAS + FRESHPG, 0x55555555
    mov eax, FRESHPG
    call eax
    REPORT_EQ eax, 0x55555555, "fresh code stored through the alias runs"
    mov dword ptr [ALIAS + FRESHPG + 0x800], 7
    mov ecx, 100
alias_rmw:
    inc dword ptr [ALIAS + FRESHPG + 0x800]
    dec ecx
    jnz alias_rmw
    REPORT_EQ [FRESHPG + 0x800], 107, "read-modify-write through the alias"
    REPORT_EQ [APICWIN + 0x30], 0x13572468, "the page tables, not the APIC, decide at 0xFEE00030"
    mov dword ptr [APICWIN + 0xB0], 0x2468ACE0
    REPORT_EQ [APICWIN + 0xB0], 0x2468ACE0, "a store there lands in RAM (the EOI register reads 0)"

    PUTSN "-- paging off again"
    mov eax, cr0
    and eax, 0x7fffffff
    mov cr0, eax
    jmp paging_off
paging_off:
    mov eax, cr0
    shr eax, 31
    REPORT_EQ eax, 0, "CR0.PG reads 0"
    int 0x80                                # uvirt stops here to deliver it (and
    REPORT_EQ [irq_count + 0x80 * 4], 1, "int 0x80 delivered"   # takes the TLB back)
    mov ecx, 100
off_stores:
    mov [FRESHPG + 0x900], ecx             # plain stores to the page first
    dec ecx
    jnz off_stores
    mov dword ptr [FRESHPG + 1], 0x66666666
    mov eax, FRESHPG
    call eax
    REPORT_EQ eax, 0x66666666, "code run while paging was on, rewritten after"
    REPORT_EQ [DATAPG + 0x808], 0x5A5A1234, "data written through the alias is still there"
    REPORT_EQ [APICRAM + 0xB0], 0x2468ACE0, "the store through 0xFEE000B0 is in RAM at 6 MiB"
    call report_summary
    ret
