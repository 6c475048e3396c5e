package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.access.AccessList;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.volume.Volume;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;

/** A volume as the NBD server offers it: a name, a description, a mode and its counters. */
public final class Export {
    private final String name;
    private final String description;
    private final Volume volume;
    private final boolean readOnly;
    private final ExportStats stats = new ExportStats();
    private final VolumeBudget budget = new VolumeBudget();
    private final ConcurrentHashMap<String, NbdTransmissionHandler> connections = new ConcurrentHashMap<>();
    private final java.util.concurrent.atomic.AtomicLong connectionIds = new java.util.concurrent.atomic.AtomicLong();
    /** Who may open this export; {@code null} means the server's default policy. */
    private volatile AccessList accessList;
    private volatile boolean closing;

    public Export(final String name, final String description, final Volume volume, final boolean readOnly) {
        this.name = name;
        this.description = description == null ? "" : description;
        this.volume = volume;
        this.readOnly = readOnly;
    }

    /** An export of {@code volume} under its own name, description and mode. */
    public static Export of(final Volume volume) {
        return new Export(volume.name(), volume.metadata().description(), volume, volume.readOnly());
    }

    public String name() {
        return name;
    }

    public String description() {
        return description;
    }

    public Volume volume() {
        return volume;
    }

    public long size() {
        return volume.size();
    }

    public boolean readOnly() {
        return readOnly;
    }

    public ExportStats stats() {
        return stats;
    }

    /** Requests and bytes in flight on all connections to this export. */
    VolumeBudget budget() {
        return budget;
    }

    /** Requests being served on all connections to this export now. */
    public int inFlightRequests() {
        return budget.requests();
    }

    public AccessList accessList() {
        return accessList;
    }

    public void accessList(final AccessList list) {
        this.accessList = list;
    }

    /**
     * Registers a connection and returns its id, unique for this export's lifetime ("c1", "c2", ...), or
     * {@code null} if the export is closing: registering first and checking second means a connection racing
     * {@link #close()} is either seen by it or sees it.
     */
    String register(final NbdTransmissionHandler connection) {
        final String id = "c" + connectionIds.incrementAndGet();
        connections.put(id, connection);
        if (closing) {
            connections.remove(id);
            return null;
        }
        return id;
    }

    /** Refuses new connections from now on; the caller then drains the registered ones. */
    public void close() {
        closing = true;
    }

    public boolean closing() {
        return closing;
    }

    void unregister(final String id) {
        connections.remove(id);
    }

    /** The connections in the transmission phase now. */
    public List<NbdTransmissionHandler> connections() {
        return new ArrayList<>(connections.values());
    }

    public NbdTransmissionHandler connection(final String id) {
        return connections.get(id);
    }

    /**
     * The transmission flags for a connection to this export.
     *
     * <p>{@code CAN_MULTI_CONN} is true, not hopeful: every connection writes through the same file and page
     * cache, and a FLUSH syncs the whole file (see {@code FlushCoordinator}), so it covers writes replied to on
     * every connection.
     *
     * @param structuredReplies whether the connection negotiated structured replies (DF needs them).
     */
    public int transmissionFlags(final boolean structuredReplies) {
        int flags = NbdConstants.TFLAG_HAS_FLAGS | NbdConstants.TFLAG_SEND_FLUSH | NbdConstants.TFLAG_SEND_FUA
            | NbdConstants.TFLAG_CAN_MULTI_CONN | NbdConstants.TFLAG_SEND_CACHE;
        if (readOnly) {
            flags |= NbdConstants.TFLAG_READ_ONLY;
        } else {
            flags |= NbdConstants.TFLAG_SEND_TRIM | NbdConstants.TFLAG_SEND_WRITE_ZEROES
                | NbdConstants.TFLAG_SEND_FAST_ZERO;
        }
        if (structuredReplies) {
            flags |= NbdConstants.TFLAG_SEND_DF;
        }
        return flags;
    }
}
