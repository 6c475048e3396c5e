package io.nbdtail.volume;

/**
 * A volume operation was refused or failed. The {@link Code} is stable (the control API maps it to an HTTP
 * status and an error name); the message says what was wrong and what to do.
 */
public final class VolumeException extends Exception {
    private static final long serialVersionUID = 1L;

    /** Why the operation did not happen. */
    public enum Code {
        /** No volume of that name in the data directory. */
        NOT_FOUND,
        /** A volume of that name exists already, or the block device is registered already. */
        ALREADY_EXISTS,
        /** The name breaks the naming rules ({@link VolumeService#checkName}). */
        INVALID_NAME,
        /** Not a positive multiple of 512 up to 2^62, or not the size of the block device. */
        INVALID_SIZE,
        /** The path is missing, is not a block device, or cannot be opened. */
        INVALID_DEVICE,
        /** Another process (or another holder in this one) has the volume or the data directory. */
        LOCKED,
        /** The volume's record or data is damaged, or of a format this build does not read. */
        CORRUPT,
        /** No snapshot of that name. */
        SNAPSHOT_NOT_FOUND,
        /** A snapshot of that name exists already. */
        SNAPSHOT_EXISTS,
        /** The volume's layer metadata cannot be trusted, or carries the needs-check flag: run nbdtail check. */
        NEEDS_CHECK,
        /** A snapshot or volume of that name does not exist, or the operation is refused in this state. */
        CONFLICT,
        /** The file system failed; the message carries the system's reason. */
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

    /** Why the operation did not happen. */
    public Code code() {
        return code;
    }
}
