# Lesson 8: two guests, one piece of memory.  Each guest runs this program with
#   -object memory-backend-file,id=shm,size=1M,share=on,mem-path=FILE
#   -device ivshmem-plain,memdev=shm
# and the same FILE: BAR2 of the ivshmem device is that file, mapped into both guests.
# ROLE (a build parameter) says who speaks first: 1 = guest A, 2 = guest B.
# (ivshmem-plain gives a guest no peer id and no doorbell; ivshmem-doorbell and an
# ivshmem server add both: uvirt ivshmem-server.)
#
# Mailbox layout in the shared memory:
#   +0x00  A's flag: 1 = "my message is at +0x100"
#   +0x04  B's flag: 1 = "my answer is at +0x200"
#   +0x100 A's message, +0x200 B's answer (NUL-terminated)
.include "uvirt.inc"

.ifndef ROLE
.set ROLE, 1
.endif
.ifndef WAIT_MAX
.set WAIT_MAX, 12000000            # tries: a few seconds on QEMU and on uvirt
.endif

.align 4, 0
shm: .long 0

# eax = address of a dword: wait until it is nonzero -> eax = 1, or 0 after WAIT_MAX tries
wait_flag:
    push ecx
    mov ecx, WAIT_MAX
wait_loop:
    cmp dword ptr [eax], 0
    jne wait_done
    pause                        # a spin-wait hint; the other guest writes the flag
    dec ecx
    jnz wait_loop
    xor eax, eax
    pop ecx
    ret
wait_done:
    mov eax, 1
    pop ecx
    ret

# esi = string, edi = destination: copy with the NUL
copy_string:
    push eax
copy_loop:
    lodsb
    stosb
    test al, al
    jnz copy_loop
    pop eax
    ret

main:
    mov eax, 0x11101af4          # ivshmem: 1af4:1110
    call pci_find
    REQUIRE_FOUND "FAIL: no ivshmem device"
    mov ebx, eax
    mov edx, 0x1c                # BAR2 is 64-bit: its upper half must be 0 for us
    call pci_read32
    REPORT_EQ eax, 0, "the shared memory is below 4 GiB"
    mov eax, ebx
    mov edx, 0x18
    call pci_read32
    and eax, 0xfffffff0
    mov [shm], eax
    mov ebx, eax
.if ROLE == 1
    PUTSN "I am guest A: I write first"
    mov esi, ping
    lea edi, [ebx + 0x100]
    call copy_string
    mov dword ptr [ebx + 0x00], 1          # publish: the flag after the message
    lea eax, [ebx + 0x04]
    call wait_flag
    REPORT_TRUE eax, "guest B answered"
    PUTS "B says: "
    lea eax, [ebx + 0x200]
    call puts
    call put_nl
.else
    PUTSN "I am guest B: I wait for A"
    lea eax, [ebx + 0x00]
    call wait_flag
    REPORT_TRUE eax, "guest A wrote"
    PUTS "A says: "
    lea eax, [ebx + 0x100]
    call puts
    call put_nl
    mov esi, pong
    lea edi, [ebx + 0x200]
    call copy_string
    mov dword ptr [ebx + 0x04], 1
.endif
    call report_summary
    ret

ping: .asciz "ping, from guest A"
pong: .asciz "pong, from guest B"
