"""The guest-program toolchain (uvirt.firmware): preprocessing, errors, image layout,
the build cache, keystone quirks, and the ``uvirt asm`` entry point.  No emulator."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, Cs

from uvirt import firmware as fw
from uvirt.errors import FirmwareBuildError

BUNDLED = sorted(p.stem for p in fw.FIRMWARE_DIR.glob("*.S"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("UVIRT_CACHE", str(cache))
    return cache / "firmware"


def _prog(tmp_path: Path, body: str, name: str = "prog.S") -> Path:
    p = tmp_path / name
    p.write_text('.include "uvirt.inc"\n' + body)
    return p


def _disasm_at(img: bytes, needle: bytes):
    off = img.index(needle)
    return next(Cs(CS_ARCH_X86, CS_MODE_32).disasm(img[off:off + 16], fw.LOAD_ADDR + off))


# ---------------------------------------------------------------- image layout


def test_multiboot_header_fields(tmp_path: Path) -> None:
    img = fw.build(_prog(tmp_path, "main:\n    ret\n"))
    magic, flags, csum, hdr, load, load_end, bss_end, entry = struct.unpack_from("<8I", img)
    assert magic == 0x1BADB002
    assert flags == 0x00010000
    assert (magic + flags + csum) & 0xFFFFFFFF == 0
    assert hdr == load == 0x100000
    assert load_end == bss_end == 0x100000 + len(img)
    assert 0x100020 <= entry < load_end
    first = next(Cs(CS_ARCH_X86, CS_MODE_32).disasm(img[entry - 0x100000:], entry))
    assert first.mnemonic == "mov" and first.op_str.endswith("], esp")  # the stub saves ESP first


def test_program_without_uvirt_inc_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "bare.S"
    p.write_text("main:\n    ret\n")
    with pytest.raises(FirmwareBuildError, match=r'bare\.S: image does not start with the multiboot header'):
        fw.build(p)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_programs_build(name: str) -> None:
    img = fw.build(fw.bundled(name))
    assert img[:4] == struct.pack("<I", 0x1BADB002)
    assert b"\x66\x0f\x01" not in img  # no keystone-style 16-bit-operand descriptor-table op


def test_bundled_unknown_name_lists_programs() -> None:
    with pytest.raises(FirmwareBuildError, match=r"^nope: No such file or directory, and no bundled "
                                                 r"guest program of that name \(have: .*pci_probe"):
        fw.bundled("nope")


# ---------------------------------------------------------------- keystone quirks


@pytest.mark.parametrize(
    ("macro", "mnemonic", "modrm"),
    [("LIDT", "lidt", 0x1D), ("LGDT", "lgdt", 0x15), ("SIDT", "sidt", 0x0D), ("SGDT", "sgdt", 0x05)],
)
def test_descriptor_table_macros_have_no_0x66_prefix(tmp_path: Path, macro: str, mnemonic: str, modrm: int) -> None:
    img = fw.build(_prog(tmp_path, f"main:\n    {macro} 0x12345678\n    ret\n"))
    ins = _disasm_at(img, bytes([0x0F, 0x01, modrm]) + (0x12345678).to_bytes(4, "little"))
    assert ins.bytes[0] == 0x0F
    assert (ins.mnemonic, ins.op_str) == (mnemonic, "[0x12345678]")
    assert img[img.index(bytes(ins.bytes)) - 1] != 0x66


def test_keystone_still_prefixes_lidt_with_0x66() -> None:
    """Canary: why the LIDT macro exists.  If keystone is fixed, the macro can go."""
    from keystone import KS_ARCH_X86, KS_MODE_32, Ks

    enc, _ = Ks(KS_ARCH_X86, KS_MODE_32).asm("lidt [0x1000]", 0)
    assert bytes(enc[:3]) == b"\x66\x0f\x01"


def test_decimal_numbers_stay_decimal(tmp_path: Path) -> None:
    # keystone reads bare numbers as hex once a sym_resolver is set: the build sets none
    img = fw.build(_prog(tmp_path, "main:\n    mov ecx, 1234567\n    ret\n"))
    assert b"\xb9" + (1234567).to_bytes(4, "little") in img


def test_ljmp_macro(tmp_path: Path) -> None:
    img = fw.build(_prog(tmp_path, "main:\n    LJMP 0x08, 0x00112233\n"))
    ins = _disasm_at(img, b"\xea\x33\x22\x11\x00\x08\x00")
    assert (ins.mnemonic, ins.op_str) == ("ljmp", "8:0x112233")


def test_macro_local_labels_are_unique(tmp_path: Path) -> None:
    # keystone itself emits nothing at all for a macro using \@; we expand macros first
    body = ".macro SKIP\n    jmp l\\@\n    nop\nl\\@:\n.endm\nmain:\n    SKIP\n    SKIP\n    ret\n"
    img = fw.build(_prog(tmp_path, body))
    assert img.count(b"\xeb\x01\x90") == 2


def test_macro_defaults_and_nested_macros(tmp_path: Path) -> None:
    body = (".macro LOADK r, v=0x77\n    mov \\r, \\v\n.endm\n"
            ".macro TWICE\n    LOADK eax\n    LOADK ebx, 5\n.endm\nmain:\n    TWICE\n    ret\n")
    img = fw.build(_prog(tmp_path, body))
    assert b"\xb8\x77\x00\x00\x00\xbb\x05\x00\x00\x00" in img


def test_semicolon_starts_a_comment(tmp_path: Path) -> None:
    img = fw.build(_prog(tmp_path, "main:\n    mov eax, 1 ; bogus words\n    mov al, ';' # also\n    ret // c\n"))
    assert b"\xb8\x01\x00\x00\x00\xb0\x3b\xc3" in img


def test_strings_keep_comment_characters(tmp_path: Path) -> None:
    img = fw.build(_prog(tmp_path, 'main:\n    PUTS "a;b#c//d"\n    ret\n'))
    assert b"a;b#c//d\x00" in img


# ---------------------------------------------------------------- includes and errors


def test_include_search_and_once_semantics(tmp_path: Path) -> None:
    (tmp_path / "mine.inc").write_text('.include "uvirt.inc"\nmy_value: .long 0xfeedf00d\n')
    img = fw.build(_prog(tmp_path, '.include "mine.inc"\n.include "mine.inc"\nmain:\n    ret\n'))
    assert img.count((0xFEEDF00D).to_bytes(4, "little")) == 1


def test_missing_include_names_file_and_line(tmp_path: Path) -> None:
    p = _prog(tmp_path, "main:\n    ret\n.include \"nope.inc\"\n")
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:4: include file 'nope\.inc' not found"):
        fw.build(p)


def test_error_in_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.inc").write_text("helper:\n    frobnicate eax\n    ret\n")
    p = _prog(tmp_path, '.include "bad.inc"\nmain:\n    ret\n')
    with pytest.raises(FirmwareBuildError, match=r"bad\.inc:2: .*frobnicate eax$") as ei:
        fw.build(p)
    assert "\n" not in str(ei.value)


def test_error_in_program_after_forward_references(tmp_path: Path) -> None:
    body = "main:\n    jmp later\n    loop later\n    mov eax, [esi*3]\nlater:\n    ret\n"
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:5: .*mov eax, \[esi\*3\]"):
        fw.build(_prog(tmp_path, body))


def test_error_inside_macro_names_invocation_and_macro(tmp_path: Path) -> None:
    body = ".macro BAD\n    nop\n    movv eax, 1\n.endm\nmain:\n    BAD\n    ret\n"
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:7 \(in macro BAD\): .*movv eax, 1"):
        fw.build(_prog(tmp_path, body))


def test_undefined_symbol_names_line(tmp_path: Path) -> None:
    body = "main:\n    mov eax, 1\n    call no_such_routine\n    ret\n"
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:4: undefined symbol 'no_such_routine'"):
        fw.build(_prog(tmp_path, body))


def test_unbalanced_bracket_is_rejected(tmp_path: Path) -> None:
    # keystone would silently assemble `mov eax, [ebx+` as `mov eax, [ebx]`
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:3: unbalanced \[ \]"):
        fw.build(_prog(tmp_path, "main:\n    mov eax, [ebx+\n    ret\n"))


def test_macro_argument_count_checked(tmp_path: Path) -> None:
    with pytest.raises(FirmwareBuildError, match=r"prog\.S:3: macro PUTHEX8 takes 1 argument\(s\), got 2"):
        fw.build(_prog(tmp_path, "main:\n    PUTHEX8 1, 2\n    ret\n"))


# ---------------------------------------------------------------- defines


def test_defines_become_set_lines(tmp_path: Path) -> None:
    body = ".ifndef WANT\n.set WANT, 0x11\n.endif\nmain:\n    mov eax, WANT\n    ret\n"
    p = _prog(tmp_path, body)
    assert b"\xb8\x11\x00\x00\x00" in fw.build(p)
    assert b"\xb8\x34\x12\xf4\x1a" in fw.build(p, defines={"WANT": 0x1AF41234})
    assert b"\xb8\xff\xff\xff\xff" in fw.build(p, defines={"WANT": -1})


def test_bad_define_name(tmp_path: Path) -> None:
    with pytest.raises(FirmwareBuildError, match=r"bad define name '1X'"):
        fw.build(_prog(tmp_path, "main:\n ret\n"), defines={"1X": 1})


# ---------------------------------------------------------------- cache


def test_cache_miss_then_hit(tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _prog(tmp_path, "main:\n    ret\n")
    before = fw.cache_stats.misses
    img = fw.build(p)
    assert fw.cache_stats.misses == before + 1
    assert len(list(_private_cache.glob("*.bin"))) == 1

    def no_assembler(_lines):  # noqa: ANN001
        raise AssertionError("cache hit expected")

    monkeypatch.setattr(fw, "_assemble", no_assembler)
    hits = fw.cache_stats.hits
    assert fw.build(p) == img
    assert fw.cache_stats.hits == hits + 1


def test_cache_key_covers_includes_and_defines(tmp_path: Path, _private_cache: Path) -> None:
    inc = tmp_path / "val.inc"
    inc.write_text("val: .long 1\n")
    p = _prog(tmp_path, '.include "val.inc"\nmain:\n    mov eax, X\n    ret\n')
    a = fw.build(p, defines={"X": 1})
    b = fw.build(p, defines={"X": 2})
    inc.write_text("val: .long 2\n")
    c = fw.build(p, defines={"X": 2})
    assert len({a, b, c}) == 3
    assert len(list(_private_cache.glob("*.bin"))) == 3


def test_build_to_writes_image(tmp_path: Path) -> None:
    out = fw.build_to(_prog(tmp_path, "main:\n    ret\n"), tmp_path / "o.bin")
    assert out.read_bytes()[:4] == b"\x02\xb0\xad\x1b"


# ---------------------------------------------------------------- uvirt asm


def test_asm_main_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.bin"
    assert fw.asm_main(["pci_probe", "-o", str(out), "-D", "UNCLAIMED_PORT=0x310"]) == 0
    assert out.read_bytes()[:4] == b"\x02\xb0\xad\x1b"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_prog", "-o", "x.bin"], r"no_such_prog: No such file or directory, and no bundled guest program"),
        (["./missing.S", "-o", "x.bin"], r"uvirt: missing\.S: No such file or directory$"),
        (["pci_probe"], r"the following arguments are required: -o"),
        (["pci_probe", "-o", "x.bin", "-D", "X=zz"], r"bad -D 'X=zz': value 'zz' is not an integer"),
        (["pci_probe", "-o", "x.bin", "-D", "=3"], r"bad -D '=3'"),
        (["pci_probe", "-o", "/nonexistent-dir/x.bin"], r"cannot write /nonexistent-dir/x\.bin"),
        (["pci_probe", "-o", "x.bin", "--bogus"], r"unrecognized arguments: --bogus"),
    ],
)
def test_asm_main_errors_are_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert fw.asm_main(argv) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvirt: "), cap.err
    assert re.search(message, lines[0]), lines[0]


def test_asm_main_assembly_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _prog(tmp_path, "main:\n    bogus\n")
    assert fw.asm_main([str(p), "-o", str(tmp_path / "o.bin")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"^uvirt: .*prog\.S:3: .*bogus$", err.strip())



def test_failed_build_does_not_switch_later_builds_to_hex(tmp_path):
    """Regression: keystone's sym_resolver radix switch is process-wide; the error
    probes must not leak it (decimal 10 became 0x10 in every later build)."""
    from uvirt import firmware as fw
    bad = tmp_path / "bad.S"
    bad.write_text('.include "uvirt.inc"\nmain:\n    mov eax, no_such_symbol\n    ret\n')
    with pytest.raises(fw.FirmwareBuildError):
        fw.build(bad)
    good = tmp_path / "good.S"
    good.write_text('.include "uvirt.inc"\nmain:\n    mov al, 10\n    ret\n')
    assert bytes.fromhex("b00a") in fw.build(good)


# ---------------------------------------------------------------- numeric local labels (GNU as)


def test_numeric_local_labels(tmp_path: Path) -> None:
    body = ("main:\n    mov ecx, 3\n1:  dec ecx\n    jnz 1b\n    jmp 1f\n    nop\n"
            "1:  jmp 2f\n2:\n    ret\n")
    img = fw.build(_prog(tmp_path, body))
    start = img.index(bytes.fromhex("b903000000"))            # mov ecx, 3
    # dec ecx; jnz back to it; jmp over the nop; jmp to the next line; ret
    assert img[start + 5:start + 14] == bytes.fromhex("49 75fd eb01 90 eb00 c3")


def test_numeric_label_before_a_macro_and_inside_one(tmp_path: Path) -> None:
    body = (".macro SPIN n\n    mov ecx, \\n\n1:  loop 1b\n.endm\n"
            "main:\n1:  PUTS \"a\"\n    SPIN 2\n    SPIN 3\n    jmp 1b\n")
    img = fw.build(_prog(tmp_path, body))
    # each SPIN expansion loops on its own 1:, and the final jmp 1b reaches the second
    # SPIN's 1: (the nearest before it), as GNU as resolves it
    spin2 = img.index(bytes.fromhex("b902000000 e2fe"))
    spin3 = img.index(bytes.fromhex("b903000000 e2fe"))
    assert spin3 > spin2 and img[spin3 + 7:spin3 + 9] == bytes.fromhex("ebfc")


def test_numeric_local_labels_match_gnu_as(tmp_path: Path) -> None:
    """The same instructions through GNU as (binutils) and through uvirt's toolchain give
    the same bytes: local-label resolution (nearest back / forward, redefinitions)."""
    import shutil
    import subprocess
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("GNU as/objcopy (binutils) not installed")
    code = ("    mov ecx, 5\n1:  dec ecx\n    jz 2f\n    jmp 1b\n2:  xor eax, eax\n1:  inc eax\n"
            "    cmp eax, 3\n    jne 1b\n    jmp 1f\n    nop\n1:  ret\n")
    gas = tmp_path / "g.s"
    gas.write_text(".intel_syntax noprefix\n.code32\n" + code)
    subprocess.run(["as", "--32", "-o", str(tmp_path / "g.o"), str(gas)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "g.o"),
                    str(tmp_path / "g.bin")], check=True)
    theirs = (tmp_path / "g.bin").read_bytes()
    ours = fw.build(_prog(tmp_path, "main:\n" + code))
    assert theirs in ours


def test_local_label_without_a_definition_in_that_direction(tmp_path: Path) -> None:
    body = "main:\n    jmp 1b\n1:  ret\n    jmp 1f\n"
    with pytest.raises(FirmwareBuildError) as ei:
        fw.build(_prog(tmp_path, body))
    assert [Path(line).name for line in str(ei.value).splitlines()] == [
        "prog.S:3: local label 1b has no definition before it: jmp 1b",
        "prog.S:5: local label 1f has no definition after it: jmp 1f"]


# ---------------------------------------------------------------- every error at once


def test_every_error_of_a_file_is_reported_in_order(tmp_path: Path) -> None:
    (tmp_path / "lib.inc").write_text("helper:\n    frobnicate eax\n    ret\n")
    body = ('.include "lib.inc"\nmain:\n    movv eax, 1\n    mov eax, [ebx+\n'
            "    mov eax, [esi*3]\n    call nowhere\n    mov ebx, 2\n    bogus\n    ret\n")
    with pytest.raises(FirmwareBuildError) as ei:
        fw.build(_prog(tmp_path, body))
    lines = [re.sub(r" \(KS_ERR_\w+\)", "", Path(line).name if line.startswith("/") else line)
             for line in str(ei.value).splitlines()]
    assert lines == [
        "lib.inc:2: Invalid mnemonic: frobnicate eax",
        "prog.S:4: Invalid mnemonic: movv eax, 1",
        "prog.S:5: unbalanced [ ] in 'mov eax, [ebx+'",
        "prog.S:6: Invalid operand: mov eax, [esi*3]",
        "prog.S:7: undefined symbol 'nowhere': call nowhere",
        "prog.S:9: Invalid mnemonic: bogus",
    ]


def test_asm_prints_each_error_on_its_own_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = _prog(tmp_path, "main:\n    bogus\n    nop\n    worse eax\n")
    assert fw.asm_main([str(p), "-o", str(tmp_path / "o.bin")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert re.search(r"^uvirt: .*prog\.S:3: .*bogus$", err[0])
    assert re.search(r"^uvirt: .*prog\.S:5: .*worse eax$", err[1])


def test_error_count_is_capped(tmp_path: Path) -> None:
    body = "main:\n" + "".join(f"    bad{i}\n" for i in range(fw.MAX_ERRORS + 5))
    with pytest.raises(FirmwareBuildError) as ei:
        fw.build(_prog(tmp_path, body))
    lines = str(ei.value).splitlines()
    assert len(lines) == fw.MAX_ERRORS + 1 and lines[-1].startswith("... and ")


def test_macro_mistakes_are_reported_with_the_other_errors(tmp_path: Path) -> None:
    body = "main:\n    PUTHEX8 1, 2\n    bogus\n    PUTHEX8\n    ret\n"
    with pytest.raises(FirmwareBuildError) as ei:
        fw.build(_prog(tmp_path, body))
    lines = [Path(line).name for line in str(ei.value).splitlines()]
    assert lines[0] == "prog.S:3: macro PUTHEX8 takes 1 argument(s), got 2"
    assert lines[1].startswith("prog.S:4: Invalid mnemonic")
    assert lines[2] == "prog.S:5: macro PUTHEX8: missing argument v"
