package io.nbdtail.replication;

/**
 * What the server does at the source's cutover steps. Every {@code record*} method must be durable when it returns
 * (the volume's ownership record, fsynced).
 */
public interface CutoverHooks {
    /** Before asking the destination to take the volume: "handing over at {@code epoch}"; a restart keeps it frozen. */
    void recordHandingOver(long epoch, String destination) throws Exception;

    /** The destination refused: back to "serving at the old epoch". */
    void recordServing() throws Exception;

    /** The destination took the volume: "moved to {@code destination} at {@code epoch}". */
    void recordMoved(long epoch, String destination) throws Exception;

    /**
     * Closes the volume's client connections without answering the requests held by the freeze (they are replayed
     * at the destination by clients that reconnect) and stops serving the volume.
     */
    void closeClients();
}
