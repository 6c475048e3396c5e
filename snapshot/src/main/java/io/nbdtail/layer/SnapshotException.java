package io.nbdtail.layer;

import java.io.IOException;

/** A snapshot operation was refused; the message says why and what to do. */
public final class SnapshotException extends IOException {
    private static final long serialVersionUID = 1L;

    /** Why, in a form the control API maps to an HTTP status. */
    public enum Code {
        NOT_FOUND,
        ALREADY_EXISTS,
        /** The chain is at {@link LayeredDevice#MAX_DEPTH}. */
        TOO_DEEP,
        /** Not possible in the volume's current state (clients connected, shared files, a block device). */
        REFUSED
    }

    private final Code code;

    public SnapshotException(final Code code, final String message) {
        super(message);
        this.code = code;
    }

    public Code code() {
        return code;
    }
}
