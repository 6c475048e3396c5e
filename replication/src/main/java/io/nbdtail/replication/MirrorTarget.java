package io.nbdtail.replication;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.List;
import java.util.concurrent.CompletableFuture;

/**
 * The destination of a mirror, as the engine sees it. The NBD implementation lives in {@code nbd-server}; tests
 * use an in-memory one. Every method may throw {@link MirrorRefusedException} (the destination said no: final)
 * or another {@link IOException} (no answer: retry, or for {@link #commit}, outcome unknown).
 */
public interface MirrorTarget {
    /** Connects and introduces the session; the destination checks name, id, size and credentials. */
    Connection connect(MirrorSession session) throws IOException, InterruptedException;

    /**
     * Hands the volume over: returns once the destination has durably recorded that it owns the volume at
     * {@code epoch}. A {@link MirrorRefusedException} means it did not and never will for this request.
     */
    void commit(MirrorSession session, long epoch) throws IOException, InterruptedException;

    /**
     * After a commit with no answer: asks the destination whether it took the volume. If it did not, it must
     * durably refuse any later commit of this session before answering {@code false}, so that a commit still in
     * the network cannot land afterwards.
     *
     * @return whether the destination owns the volume at {@code epoch}.
     */
    boolean resolve(MirrorSession session, long epoch) throws IOException, InterruptedException;

    /**
     * Snapshot layers: gives the destination a fresh, empty active layer on snapshot {@code parent} (a rollback to
     * it, dropping whatever the active layer held), or, with {@code null}, checks that it has no snapshot yet (the
     * bottom layer goes into its plain volume). Called only with nothing in flight on the data connection.
     */
    void startLayer(MirrorSession session, String parent) throws IOException, InterruptedException;

    /**
     * Snapshot layers: after a FLUSH, the destination checks that its active layer rests on the snapshot's parent
     * and holds as many clusters as the source's, then takes the snapshot under its name and creation time. A
     * second seal of a snapshot it already took (the first answer was lost) answers yes again.
     */
    void seal(MirrorSession session, SnapshotLayer snapshot) throws IOException, InterruptedException;

    /** One connection to the destination, with many requests in flight. */
    interface Connection extends AutoCloseable {
        /** The destination holds this session's earlier copy (everything flushed before is still there). */
        boolean resumable();

        /** The destination volume was never written: holes need not be sent on the first pass. */
        boolean empty();

        /**
         * The snapshots the destination has sealed for this session, with their parents and creation times (empty
         * unless {@link #resumable()}); the source does not send them again.
         */
        List<SnapshotLayer> sealed();

        /** Writes {@code data} (position to limit); the buffer must stay untouched until the future completes. */
        CompletableFuture<Void> write(long offset, ByteBuffer data);

        /** Makes the range read as zeros (and, if the destination can, unallocated). */
        CompletableFuture<Void> zero(long offset, long length);

        /** Completes once every write completed before this call is durable. */
        CompletableFuture<Void> flush();

        @Override
        void close();
    }
}
