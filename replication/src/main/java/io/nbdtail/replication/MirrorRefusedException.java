package io.nbdtail.replication;

import java.io.IOException;

/**
 * The destination answered and said no (wrong size, wrong volume, bad credentials, not receiving, cutover
 * refused). Final: retrying the same request cannot help. Any other {@link IOException} from a
 * {@link MirrorTarget} means the destination did not answer, which is worth a retry.
 */
public final class MirrorRefusedException extends IOException {
    public MirrorRefusedException(final String message) {
        super(message);
    }

    public MirrorRefusedException(final String message, final Throwable cause) {
        super(message, cause);
    }
}
