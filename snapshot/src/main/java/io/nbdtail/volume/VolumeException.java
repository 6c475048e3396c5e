package io.nbdtail.volume;

/**
 * A volume operation was refused or failed. The {@link Code} is stable (the control API maps it to an HTTP
 * status and an error name); the message says what was wrong and what to do.
 */
public final class VolumeException extends Exception {
    private static final long serialVersionUID = 1L;

    /** Why the operation did not happen. */
    public enum Code {
        NOT_FOUND,
        ALREADY_EXISTS,
        INVALID_NAME,
        INVALID_SIZE,
        INVALID_DEVICE,
        LOCKED,
        CORRUPT,
        IO_ERROR
    }

    private final Code code;

    public VolumeException(final Code code, final String message) {
        this(code, message, null);
    }

    public VolumeException(final Code code, final String message, final Throwable cause) {
        super(message, cause);
        this.code = code;
    }

    public Code code() {
        return code;
    }
}
