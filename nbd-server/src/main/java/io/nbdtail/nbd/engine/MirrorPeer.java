package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.tls.ClientIdentity;

import java.net.SocketAddress;
import java.util.concurrent.CompletableFuture;

/**
 * Answers nbdtail's mirror option ({@code OPT_NBDTAIL_MIRROR}) on a destination tail: the hello that
 * authenticates a mirror source and lets its connection open a receiving export, the cutover commit, and the
 * resolution of a commit whose answer was lost. The handshake calls it on its event loop; the work (durable
 * records, draining stale connections) runs elsewhere and completes the future.
 */
public interface MirrorPeer {
    /**
     * @param request the option's data (JSON).
     * @param client   the connecting address.
     * @param identity what the client proved over TLS on this connection, or {@code null} without TLS.
     * @return the JSON answer and, after a hello, the export this connection may open; or fails with
     * {@link Refused}.
     */
    CompletableFuture<Result> handle(byte[] request, SocketAddress client, ClientIdentity identity);

    /** @param export the export this connection may then open with GO, or {@code null}. */
    record Result(byte[] reply, Export export) {
    }

    /** A refusal, sent as the option error {@code replyType} with {@code message}. */
    final class Refused extends Exception {
        private final int replyType;

        public Refused(final int replyType, final String message) {
            super(message);
            this.replyType = replyType;
        }

        public int replyType() {
            return replyType;
        }
    }
}
