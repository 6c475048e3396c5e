#!/usr/bin/python3
"""Option-haggling conformance checks through libnbd's option mode.

    /usr/bin/python3 test_handshake.py --uri nbd://127.0.0.1:PORT/disk [--ro-uri nbd://127.0.0.1:PORT/ro] [--peer nbdkit]

Writes only the first 64 KiB of the writable export.
"""

import sys

sys.dont_write_bytecode = True

import nbd  # noqa: E402

import nbdtest  # noqa: E402
from nbdtest import check, skip, expect_errno  # noqa: E402

MiB = 1 << 20
UNKNOWN_EXPORT = "no-such-export-\u00e9-42"
RW_FLAGS = {"can_flush": True, "can_fua": True, "can_trim": True, "can_zero": True, "can_fast_zero": True,
            "can_cache": True, "can_multi_conn": True, "can_df": True, "is_read_only": False}
RO_FLAGS = {"can_flush": True, "can_fua": True, "can_trim": False, "can_zero": False, "can_fast_zero": False,
            "can_cache": True, "can_multi_conn": True, "can_df": True, "is_read_only": True}


def flag_map(h):
    return {name: bool(getattr(h, name)()) for name in RW_FLAGS}


def opt_handle(uri, **kw):
    return nbdtest.connect(uri, opt_mode=True, strict=True, **kw)


def close(h):
    try:
        h.shutdown()
    except nbd.Error:
        pass


def t_list(args):
    h = opt_handle(args.uri)
    exports = []
    n = h.opt_list(lambda name, desc: exports.append((name, desc)))
    nbdtest.info("exports: %r" % exports)
    check(n >= 1 and n == len(exports), "opt_list returns at least one export (%d)" % n)
    names = dict(exports)
    check(args.target.export in names, "opt_list contains export %r" % args.target.export)
    if args.nbdkit:
        # nbdkit's memory plugin has no descriptions: it lists ("", "") only.
        skip("export description in opt_list (nbdkit memory plugin has none)")
    else:
        check(names.get(args.target.export, "") != "", "opt_list gives %r a description" % args.target.export,
              repr(names.get(args.target.export)))
    if args.ro_target is not None and args.target.same_server(args.ro_target):
        check(args.ro_target.export in names, "opt_list contains read-only export %r" % args.ro_target.export)
        check(names.get(args.ro_target.export, "") != "",
              "opt_list gives %r a description" % args.ro_target.export)
    check(len(set(n for n, _ in exports)) == len(exports), "opt_list names are unique")
    # LIST must leave the connection in option haggling: a second LIST and then GO work.
    if args.nbdkit:
        # nbdkit deliberately answers only one NBD_OPT_LIST per connection (ERR_UNSUP for the next).
        skip("a second opt_list on the same connection (nbdkit refuses repeated LIST)")
    else:
        again = []
        h.opt_list(lambda name, desc: again.append((name, desc)))
        check(sorted(again) == sorted(exports), "a second opt_list on the same connection gives the same list")
    h.opt_go()
    check(h.aio_is_ready(), "opt_go after opt_list enters transmission")
    nbdtest.roundtrip(h, 0, "opt_list + opt_go")
    close(h)


def t_unknown_export(args):
    h = opt_handle(args.uri)
    h.set_export_name(UNKNOWN_EXPORT)
    if args.nbdkit:
        # nbdkit's memory plugin serves any export name, so it never answers NBD_REP_ERR_UNKNOWN.
        skip("opt_info/opt_go on an unknown export -> ENOENT (nbdkit memory accepts every name)")
    else:
        # libnbd maps NBD_REP_ERR_UNKNOWN to ENOENT.
        expect_errno(h.opt_info, nbdtest.errno_mod.ENOENT, "opt_info on unknown export")
        check(h.aio_is_negotiating(), "still negotiating after failed opt_info")
        expect_errno(h.opt_go, nbdtest.errno_mod.ENOENT, "opt_go on unknown export")
        check(h.aio_is_negotiating(), "still negotiating after failed opt_go")
    h.set_export_name(args.target.export)
    expect_errno(h.opt_info, 0, "opt_info on the real export after an unknown one")
    expect_errno(h.opt_go, 0, "opt_go on the real export after an unknown one")
    nbdtest.roundtrip(h, 4096, "unknown export then GO")
    close(h)


def t_meta_contexts(args):
    h = opt_handle(args.uri, meta=False)

    def listing(queries):
        h.clear_meta_contexts()
        for q in queries:
            h.add_meta_context(q)
        got = []
        n = h.opt_list_meta_context(lambda name: got.append(name))
        return n, got

    n, got = listing([])
    nbdtest.info("contexts (no query): %r" % got)
    check("base:allocation" in got and n == len(got), "opt_list_meta_context with no query lists base:allocation")
    n, got = listing(["base:allocation"])
    check(got == ["base:allocation"], "opt_list_meta_context base:allocation -> exactly base:allocation", got)
    n, got = listing(["x-nbdtail-no-such:thing"])
    check(n == 0 and got == [], "opt_list_meta_context ignores an unknown namespace", got)
    n, got = listing(["base:no-such-leaf"])
    check(n == 0 and got == [], "opt_list_meta_context ignores an unknown base: leaf", got)
    n, got = listing(["x-nbdtail-no-such:thing", "base:allocation"])
    check(got == ["base:allocation"], "opt_list_meta_context with unknown + base:allocation", got)
    # Now select base:allocation for real (libnbd sends SET_META_CONTEXT during opt_go).
    h.clear_meta_contexts()
    h.add_meta_context("base:allocation")
    h.opt_go()
    check(h.can_meta_context("base:allocation"), "base:allocation negotiated by opt_go")
    close(h)


def t_info_rw(args):
    h = opt_handle(args.uri, full_info=True)
    h.opt_info()
    size = h.get_size()
    check(size >= 64 * MiB, "opt_info size >= 64 MiB (%d)" % size)
    check(size % 512 == 0, "export size is a multiple of 512")
    check(h.get_structured_replies_negotiated(), "structured replies negotiated")
    check(h.get_protocol() == "newstyle-fixed", "protocol is fixed newstyle", h.get_protocol())
    check(h.get_handshake_flags() == nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE | nbd.HANDSHAKE_FLAG_NO_ZEROES,
          "server offers exactly FIXED_NEWSTYLE|NO_ZEROES", h.get_handshake_flags())
    sizes = tuple(h.get_block_size(t) for t in (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM))
    if args.nbdkit:
        # nbdkit's memory plugin sends no NBD_INFO_BLOCK_SIZE (only the blocksize-policy filter adds one).
        skip("INFO_BLOCK_SIZE 1/4096/32M (nbdkit memory sends none: %r)" % (sizes,))
        skip("INFO_NAME / INFO_DESCRIPTION (nbdkit memory has no description)")
    else:
        check(sizes == (1, 4096, 32 * MiB), "block sizes min=1 preferred=4096 max=32 MiB", sizes)
        check(h.get_canonical_export_name() == args.target.export, "INFO_NAME is the export name",
              repr(h.get_canonical_export_name()))
        check(h.get_export_description() != "", "INFO_DESCRIPTION is present",
              repr(h.get_export_description()))
    flags = flag_map(h)
    for name, want in RW_FLAGS.items():
        check(flags[name] == want, "writable export %s() == %s" % (name, want), flags[name])
    # INFO followed by GO must yield the same information; and INFO is repeatable.
    for i in range(2):
        h.opt_info()
        check(h.get_size() == size and flag_map(h) == flags, "repeated opt_info #%d: same size and flags" % (i + 2))
    h.opt_go()
    check(h.get_size() == size, "opt_go size equals opt_info size")
    check(flag_map(h) == flags, "opt_go flags equal opt_info flags", flag_map(h))
    check(h.can_meta_context("base:allocation"), "can_meta_context(base:allocation) after GO")
    nbdtest.roundtrip(h, 8192, "opt_info + opt_go")
    close(h)
    # A fresh connection sees the same size.
    h = nbdtest.connect(args.uri, strict=True)
    check(h.get_size() == size, "a second connection sees the same size")
    close(h)


def t_info_ro(args):
    if args.ro_uri is None:
        skip("read-only export checks (no --ro-uri)")
        return
    h = opt_handle(args.ro_uri, full_info=True)
    h.opt_info()
    info_size = h.get_size()
    check(info_size > 0, "read-only export has a size (%d)" % info_size)
    flags = flag_map(h)
    for name, want in RO_FLAGS.items():
        if name == "can_fua" and args.nbdkit:
            # nbdkit clears SEND_FUA on a read-only export; nbdtail keeps FUA (valid on every command).
            skip("read-only can_fua() (nbdkit -r advertises no FUA)")
            continue
        check(flags[name] == want, "read-only export %s() == %s" % (name, want), flags[name])
    h.opt_go()
    check(h.get_size() == info_size and flag_map(h) == flags, "read-only: GO matches INFO")
    nbdtest.read_ok(h, 0, "read-only GO")
    close(h)
    if args.target.same_server(args.ro_target):
        # Switching export names within one negotiation: INFO on the RO export, then GO to the RW export.
        h = opt_handle(args.ro_uri)
        h.opt_info()
        check(h.is_read_only(), "INFO on the read-only export reports READ_ONLY")
        h.set_export_name(args.target.export)
        h.opt_info()
        check(not h.is_read_only(), "INFO on the writable export in the same negotiation is writable")
        h.opt_go()
        nbdtest.roundtrip(h, 12288, "switching export names during negotiation")
        close(h)


def t_abort(args):
    h = opt_handle(args.uri)
    expect_errno(h.opt_abort, 0, "opt_abort")
    check(h.aio_is_closed(), "handle closed after opt_abort")
    try:
        h.opt_go()
        check(False, "opt_go after opt_abort fails")
    except nbd.Error:
        check(True, "opt_go after opt_abort fails")
    h = nbdtest.connect(args.uri, strict=True)
    nbdtest.roundtrip(h, 16384, "opt_abort on another connection")
    close(h)


def t_no_structured(args):
    h = opt_handle(args.uri, structured=False)
    h.opt_info()
    check(not h.get_structured_replies_negotiated(), "no structured replies when not requested")
    check(not h.can_df(), "SEND_DF clear without structured replies")
    h.opt_go()
    check(not h.get_structured_replies_negotiated(), "still no structured replies after GO")
    check(not h.can_meta_context("base:allocation"), "no base:allocation without structured replies")
    for name in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn"):
        check(bool(getattr(h, name)()) == RW_FLAGS[name], "simple replies: %s() == %s" % (name, RW_FLAGS[name]))
    nbdtest.roundtrip(h, 20480, "GO without structured replies")
    nbdtest.roundtrip(h, 0, "GO without structured replies (64 KiB)", length=65536)
    chunks = []
    h.pwrite(b"\xa5" * 8192, 24576)
    buf = h.pread_structured(8192, 24576, lambda sub, off, st, err: chunks.append((off, st, len(sub))) or 0)
    check(bytes(buf) == b"\xa5" * 8192, "pread_structured over simple replies returns the data")
    check(chunks == [(24576, nbd.READ_DATA, 8192)], "simple reply read = one data chunk", chunks)
    close(h)


def t_handshake_flags(args):
    # Fixed newstyle without NO_ZEROES: libnbd still uses GO, but the server must cope with the flag missing.
    h = nbdtest.connect(args.uri, strict=True, handshake_flags=nbd.HANDSHAKE_FLAG_FIXED_NEWSTYLE)
    check(h.get_protocol() == "newstyle-fixed", "client without NO_ZEROES: fixed newstyle")
    nbdtest.roundtrip(h, 28672, "handshake without NO_ZEROES")
    close(h)
    # No client flags at all: plain newstyle, only NBD_OPT_EXPORT_NAME (and the 124 zero bytes) allowed.
    h = nbdtest.connect(args.uri, strict=True, handshake_flags=0)
    check(h.get_protocol() == "newstyle", "client without FIXED_NEWSTYLE: newstyle via EXPORT_NAME",
          h.get_protocol())
    check(not h.get_structured_replies_negotiated(), "plain newstyle has no structured replies")
    nbdtest.roundtrip(h, 32768, "plain newstyle EXPORT_NAME handshake")
    close(h)
    h = nbdtest.connect(args.uri, strict=True, handshake_flags=nbd.HANDSHAKE_FLAG_NO_ZEROES)
    nbdtest.roundtrip(h, 36864, "plain newstyle with NO_ZEROES")
    close(h)


def t_multi_conn(args):
    # CAN_MULTI_CONN: a write replied on one connection and flushed is visible on another.
    a = nbdtest.connect(args.uri, strict=True)
    b = nbdtest.connect(args.uri, strict=True)
    data = nbdtest.pattern(77, 4096)
    a.pwrite(data, 40960)
    a.flush()
    check(bytes(b.pread(4096, 40960)) == data, "write+flush on one connection visible on another")
    data2 = nbdtest.pattern(78, 4096)
    b.pwrite(data2, 40960, nbd.CMD_FLAG_FUA)
    check(bytes(a.pread(4096, 40960)) == data2, "FUA write on one connection visible on another")
    close(a)
    close(b)


def main():
    args = nbdtest.parse_args(__doc__)
    nbdtest.run("opt_list", t_list, args)
    nbdtest.run("unknown export", t_unknown_export, args)
    nbdtest.run("meta contexts", t_meta_contexts, args)
    nbdtest.run("opt_info writable", t_info_rw, args)
    nbdtest.run("opt_info read-only", t_info_ro, args)
    nbdtest.run("opt_abort", t_abort, args)
    nbdtest.run("no structured replies", t_no_structured, args)
    nbdtest.run("handshake flags", t_handshake_flags, args)
    nbdtest.run("multi-conn", t_multi_conn, args)
    nbdtest.finish()


if __name__ == "__main__":
    nbdtest.guard(main)
