"""Tiny harness shared by the NBD conformance scripts in this directory.

Every script prints one line per check (``ok: ...`` or ``FAIL: ...``; ``skip: ...`` lines are informational
and not counted), then a final summary line exactly ``N passed, M failed`` and exits 1 if anything failed.
An exception escaping a section is reported as one failed check and the script carries on with the next
section; a watchdog fails the whole run if it hangs (a server that never answers must not hang the build).

The expected behaviour is nbdtail's (``--peer nbdtail``, the default), which follows the NBD spec
(``/tmp/proto.md``, ``NetworkBlockDevice/nbd: doc/proto.md``). ``--peer nbdkit`` exists so the scripts
themselves can be validated against nbdkit 1.32, which deliberately differs in a few places; each such place
is gated in the scripts with ``if args.peer == "nbdkit"`` and a comment saying why.

Run with the system python (``/usr/bin/python3``), which has Debian's ``python3-libnbd`` (libnbd 1.14).
Note: in libnbd 1.14 ``nbd.Error.errno`` is the symbolic *name* ('EINVAL'); the number is ``.errnum``.
``error_number()`` below copes with both.
"""

import argparse
import errno as errno_mod
import os
import sys
import threading
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True

_passed = 0
_failed = 0
_lock = threading.Lock()
_start = time.monotonic()


def _emit(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(cond, msg, detail=None):
    """Record one check. Returns bool(cond) so callers can chain."""
    global _passed, _failed
    with _lock:
        if cond:
            _passed += 1
            _emit("ok: " + msg)
        else:
            _failed += 1
            _emit("FAIL: " + msg + ("" if detail is None else " (" + str(detail) + ")"))
    return bool(cond)


def skip(msg):
    """An informational line for a check that does not apply to this peer; not counted."""
    _emit("skip: " + msg)


def info(msg):
    _emit("# " + msg)


def error_number(exc):
    """The errno (int) carried by an nbd.Error, or None."""
    num = getattr(exc, "errnum", None)
    if isinstance(num, int):
        return num
    val = getattr(exc, "errno", None)
    if isinstance(val, int):
        return val
    if isinstance(val, str):
        return getattr(errno_mod, val, None)
    return None


def errname(num):
    if num is None:
        return "None"
    if num == 0:
        return "success"
    return errno_mod.errorcode.get(num, str(num))


def expect_errno(fn, errno_value, label):
    """Call fn(); expect it to fail with nbd.Error carrying errno_value.

    errno_value 0 (or None) means fn() must succeed. Returns (passed, result_or_exception).
    """
    import nbd
    want = errno_value or 0
    try:
        result = fn()
    except nbd.Error as e:
        got = error_number(e)
        return check(got == want, "%s -> %s" % (label, errname(want)),
                     "got %s: %s" % (errname(got), e)), e
    return check(want == 0, "%s -> %s" % (label, errname(want)), "got success"), result


def section(name):
    info("--- " + name)


def run(name, fn, *a, **kw):
    """Run one section: fn(*a, **kw); an unexpected exception becomes one FAIL and the script goes on."""
    section(name)
    try:
        return fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - any escape is a failed check
        check(False, "%s: unexpected exception" % name, "%s: %s" % (type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        return None


def guard(main):
    """Run a script's main(); an exception outside any section (say, the server is down) is one FAIL."""
    try:
        main()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        check(False, "unexpected exception outside a section", "%s: %s" % (type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
    finish()


def finish():
    """Print the summary line and exit (1 if any check failed or none ran)."""
    with _lock:
        info("elapsed %.1f s" % (time.monotonic() - _start))
        _emit("%d passed, %d failed" % (_passed, _failed))
        sys.stdout.flush()
        code = 1 if (_failed or not _passed) else 0
    # os._exit: never wait for a libnbd handle stuck on a misbehaving server in a finaliser.
    os._exit(code)


def _watchdog(seconds):
    def fire():
        global _failed
        with _lock:
            _failed += 1
            _emit("FAIL: watchdog: script did not finish within %d s (server hung?)" % seconds)
            _emit("%d passed, %d failed" % (_passed, _failed))
            sys.stdout.flush()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


class Target:
    """host, port and export name parsed from an nbd:// URI."""

    def __init__(self, uri):
        self.uri = uri
        u = urllib.parse.urlparse(uri)
        if u.scheme != "nbd":
            raise SystemExit("only nbd:// URIs are supported: %r" % uri)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 10809
        self.export = urllib.parse.unquote(u.path[1:]) if u.path.startswith("/") else ""

    def same_server(self, other):
        return other is not None and (self.host, self.port) == (other.host, other.port)


def parse_args(description, need_uri=True):
    """Common command line: --uri [--ro-uri] [--peer nbdtail|nbdkit] [--host --port --export] [--timeout]."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--uri", help="nbd://HOST:PORT/EXPORT of a writable export (sparse, >= 64 MiB)")
    p.add_argument("--ro-uri", help="nbd://HOST:PORT/EXPORT of a read-only export")
    p.add_argument("--peer", default="nbdtail", choices=["nbdtail", "nbdkit"],
                   help="server under test; nbdkit only relaxes checks where nbdkit deliberately differs")
    p.add_argument("--host", help="raw-socket target host (default: from --uri)")
    p.add_argument("--port", type=int, help="raw-socket target port (default: from --uri)")
    p.add_argument("--export", help="raw-socket export name (default: from --uri)")
    p.add_argument("--timeout", type=float, default=90.0, help="watchdog for the whole script, seconds")
    args = p.parse_args()
    args.target = Target(args.uri) if args.uri else None
    args.ro_target = Target(args.ro_uri) if args.ro_uri else None
    if args.target is not None:
        args.host = args.host or args.target.host
        args.port = args.port or args.target.port
        args.export = args.export if args.export is not None else args.target.export
    if need_uri and args.uri is None:
        p.error("--uri is required")
    if not need_uri and (args.host is None or args.port is None or args.export is None):
        p.error("need --host, --port and --export (or --uri)")
    args.nbdkit = args.peer == "nbdkit"
    _watchdog(args.timeout)
    info("%s against %s (peer %s)" % (os.path.basename(sys.argv[0]),
                                      args.uri or "%s:%s/%s" % (args.host, args.port, args.export), args.peer))
    return args


def connect(uri, strict=False, structured=True, meta=True, opt_mode=False, full_info=False,
            handshake_flags=None):
    """A connected libnbd handle.

    strict=False sets strict mode 0 so libnbd sends out-of-range, zero-length and wrongly flagged
    requests to the server instead of refusing them client side. meta=True asks for base:allocation.
    opt_mode=True stops in option negotiation (caller does opt_* and opt_go).
    """
    import nbd
    h = nbd.NBD()
    h.set_handle_name("conformance")
    if not structured:
        h.set_request_structured_replies(False)
    if meta:
        h.add_meta_context("base:allocation")
    if full_info:
        h.set_full_info(True)
    if handshake_flags is not None:
        h.set_handshake_flags(handshake_flags)
    if opt_mode:
        h.set_opt_mode(True)
    if not strict:
        h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


def pattern(seed, length):
    """Deterministic, position-dependent bytes (distinct for every seed)."""
    import random
    return random.Random(seed).randbytes(length)


_rt_counter = [0]


def roundtrip(h, offset, label, length=4096):
    """A good write + read-back on h: proves the connection still works after an error."""
    _rt_counter[0] += 1
    data = pattern(0x5EED0000 + _rt_counter[0], length)
    try:
        h.pwrite(data, offset)
        back = h.pread(length, offset)
    except Exception as e:  # noqa: BLE001
        return check(False, "connection usable after %s" % label, "%s: %s" % (type(e).__name__, e))
    return check(bytes(back) == data, "connection usable after %s" % label, "read-back mismatch")


def read_ok(h, offset, label, length=4096):
    """A good read on h (for read-only handles)."""
    try:
        back = h.pread(length, offset)
    except Exception as e:  # noqa: BLE001
        return check(False, "connection usable after %s" % label, "%s: %s" % (type(e).__name__, e))
    return check(len(back) == length, "connection usable after %s" % label, "short read")
