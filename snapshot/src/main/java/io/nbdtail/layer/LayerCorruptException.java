package io.nbdtail.layer;

import java.io.IOException;

/**
 * A layer's metadata (manifest, map header or map page) fails its checks. The volume needs
 * {@code nbdtail check}; nothing is served from metadata that cannot be trusted.
 */
public final class LayerCorruptException extends IOException {
    private static final long serialVersionUID = 1L;

    public LayerCorruptException(final String message) {
        super(message);
    }

    public LayerCorruptException(final String message, final Throwable cause) {
        super(message, cause);
    }
}
