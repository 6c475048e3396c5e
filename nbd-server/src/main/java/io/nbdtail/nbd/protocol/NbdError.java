package io.nbdtail.nbd.protocol;

/** The error values the spec defines for replies and error chunks ("Error values"). */
public enum NbdError {
    /** Write, trim or zero on a read-only export. */
    EPERM(1),
    /** An I/O error on the disc, or a volume that stopped taking writes after a failed sync. */
    EIO(5),
    /** The spec asks servers to avoid this one; kept for completeness of the mapping. */
    ENOMEM(12),
    /** Unknown command or flag, out-of-range read/trim/status, malformed request. */
    EINVAL(22),
    /** Write or write-zeroes past the end, or the file system is full. */
    ENOSPC(28),
    /** DF read too large, or a payload-less request above the maximum. */
    EOVERFLOW(75),
    /** FAST_ZERO that cannot be fast. */
    ENOTSUP(95),
    /** The server is shutting down. */
    ESHUTDOWN(108);

    private static final NbdError[] VALUES = values();

    private final int code;

    NbdError(final int code) {
        this.code = code;
    }

    /** The value on the wire. */
    public int code() {
        return code;
    }

    /** Index for per-error counters: {@code 0..count()-1}. */
    public static int count() {
        return VALUES.length;
    }

    public static NbdError byOrdinal(final int ordinal) {
        return VALUES[ordinal];
    }
}
