package io.nbdtail.nbd.engine;

/**
 * What a connection negotiated in the handshake, fixed for the rest of its life.
 *
 * @param export               the export being served.
 * @param structuredReplies    whether NBD_OPT_STRUCTURED_REPLY was negotiated.
 * @param transmissionFlags    the flags sent to the client.
 * @param contexts             the metadata contexts selected for this export, in the order BLOCK_STATUS reports them.
 * @param client               the client's address, for logs.
 */
public record NbdSession(Export export, boolean structuredReplies, int transmissionFlags,
                         java.util.List<MetaContext> contexts, String client) {
    public NbdSession {
        contexts = java.util.List.copyOf(contexts);
    }

    /** {@code true} if any metadata context was selected for this export. */
    public boolean hasMetaContexts() {
        return !contexts.isEmpty();
    }
}
