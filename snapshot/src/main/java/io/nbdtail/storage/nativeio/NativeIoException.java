package io.nbdtail.storage.nativeio;

import java.io.IOException;

/** A failed system call, with the {@code errno} it left behind. */
public final class NativeIoException extends IOException {
    private static final long serialVersionUID = 1L;

    private final int errno;

    public NativeIoException(final String call, final int errno, final String detail) {
        super(call + " failed: " + detail + ", errno=" + errno);
        this.errno = errno;
    }

    /** The {@code errno} of the failed call. */
    public int errno() {
        return errno;
    }
}
