package io.nbdtail.layer;

import java.io.IOException;

/** The volume's manifest carries the needs-check flag: it is not served until {@code nbdtail check} ran. */
public final class NeedsCheckException extends IOException {
    private static final long serialVersionUID = 1L;

    public NeedsCheckException(final String message) {
        super(message);
    }
}
