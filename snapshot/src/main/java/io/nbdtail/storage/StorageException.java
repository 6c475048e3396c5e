package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIoException;
import io.nbdtail.storage.nativeio.NativeIo;

import java.io.IOException;

/**
 * A storage operation failed. The {@link Kind} is what the network side needs to answer the client (the NBD
 * server maps it to EIO, ENOSPC or ENOTSUP); the message names the operation, offset and length.
 */
public final class StorageException extends IOException {
    private static final long serialVersionUID = 1L;

    /** What went wrong, as far as the client is concerned. */
    public enum Kind {
        /** The disc reported an error; the data's state is unknown. */
        IO_ERROR,
        /** The file system is full (ENOSPC, EDQUOT, EFBIG). */
        NO_SPACE,
        /** The operation cannot be done fast (FAST_ZERO) or at all on this device. */
        NOT_SUPPORTED,
        /** The volume stopped taking writes after an earlier failure, typically a failed sync. */
        VOLUME_FAILED
    }

    private final Kind kind;

    public StorageException(final Kind kind, final String message, final Throwable cause) {
        super(message, cause);
        this.kind = kind;
    }

    public StorageException(final Kind kind, final String message) {
        this(kind, message, null);
    }

    public Kind kind() {
        return kind;
    }

    /**
     * Classifies an {@link IOException} from the JDK or from {@link NativeIo}. The JDK does not expose errno, so
     * for its exceptions the strerror text is matched; a full file system is the one case that must not be
     * reported as EIO, because qemu pauses the guest on ENOSPC instead of failing its I/O.
     */
    public static StorageException of(final String operation, final IOException e) {
        if (e instanceof StorageException se) {
            return se;
        }
        return new StorageException(classify(e), operation + ": " + e.getMessage(), e);
    }

    static Kind classify(final IOException e) {
        if (e instanceof NativeIoException ne) {
            return switch (ne.errno()) {
                case NativeIo.ENOSPC, NativeIo.EDQUOT, NativeIo.EFBIG -> Kind.NO_SPACE;
                case NativeIo.EOPNOTSUPP -> Kind.NOT_SUPPORTED;
                default -> Kind.IO_ERROR;
            };
        }
        final String message = e.getMessage();
        if (message != null && (message.contains("No space left on device") || message.contains("Disk quota exceeded")
            || message.contains("File too large"))) {
            return Kind.NO_SPACE;
        }
        return Kind.IO_ERROR;
    }
}
