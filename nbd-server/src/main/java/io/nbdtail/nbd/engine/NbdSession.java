package io.nbdtail.nbd.engine;

/**
 * What a connection negotiated in the handshake, fixed for the rest of its life.
 *
 * @param export               the export being served.
 * @param structuredReplies    whether NBD_OPT_STRUCTURED_REPLY was negotiated.
 * @param transmissionFlags    the flags sent to the client.
 * @param contexts             the metadata contexts selected for this export, in the order BLOCK_STATUS reports them.
 * @param client               the client's address, for logs.
 * @param mirror               a mirror source's connection to a receiving export (authenticated by the nbdtail
 *                             mirror option, not found through the registry).
 */
public record NbdSession(Export export, boolean structuredReplies, int transmissionFlags,
                         java.util.List<MetaContext> contexts, String client, boolean mirror) {
    public NbdSession {
        contexts = java.util.List.copyOf(contexts);
    }

    public NbdSession(final Export export, final boolean structuredReplies, final int transmissionFlags,
                      final java.util.List<MetaContext> contexts, final String client) {
        this(export, structuredReplies, transmissionFlags, contexts, client, false);
    }

    /** {@code true} if any metadata context was selected for this export. */
    public boolean hasMetaContexts() {
        return !contexts.isEmpty();
    }
}
