package io.nbdtail.nbd.engine;

/**
 * What a connection negotiated in the handshake, fixed for the rest of its life.
 *
 * @param export               the export being served.
 * @param structuredReplies    whether NBD_OPT_STRUCTURED_REPLY was negotiated.
 * @param transmissionFlags    the flags sent to the client.
 * @param baseAllocationId     the context id of {@code base:allocation}, or 0 if not selected.
 * @param client               the client's address, for logs.
 * @param mirror               a mirror source's connection to a receiving export (authenticated by the nbdtail
 *                             mirror option, not found through the registry).
 */
public record NbdSession(Export export, boolean structuredReplies, int transmissionFlags, int baseAllocationId,
                         String client, boolean mirror) {
    public NbdSession(final Export export, final boolean structuredReplies, final int transmissionFlags,
                      final int baseAllocationId, final String client) {
        this(export, structuredReplies, transmissionFlags, baseAllocationId, client, false);
    }

    /** {@code true} if any metadata context was selected for this export. */
    public boolean hasMetaContexts() {
        return baseAllocationId != 0;
    }
}
