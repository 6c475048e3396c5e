package io.nbdtail.nbd.protocol;

/** The peer broke a rule of the protocol that leaves no way to continue: the connection is closed. */
public final class NbdProtocolException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public NbdProtocolException(final String message) {
        super(message, null, false, false);
    }
}
