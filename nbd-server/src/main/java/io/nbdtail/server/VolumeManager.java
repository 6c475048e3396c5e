package io.nbdtail.server;

import io.nbdtail.nbd.access.AccessList;
import io.nbdtail.nbd.engine.Export;
import io.nbdtail.nbd.engine.ExportRegistry;
import io.nbdtail.nbd.engine.NbdTransmissionHandler;
import io.nbdtail.layer.LayeredDevice;
import io.nbdtail.layer.SnapshotException;
import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.StorageExecutor;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeMetadata;
import io.nbdtail.volume.VolumeService;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * The volumes this server serves, and the only place that changes them while it runs: the daemon opens them at
 * start, the control API creates, grows, deletes and restricts them. Also the {@link ExportRegistry} the NBD
 * handshake asks, so access lists take effect on the next handshake.
 *
 * <p>Changes to one volume are serialised (a per-name lock); different volumes change independently, and
 * nothing here holds a lock while an NBD request is served.
 */
public final class VolumeManager implements ExportRegistry, AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(VolumeManager.class);

    private final VolumeService volumes;
    private final StorageExecutor storage;
    private final boolean defaultAllow;
    private final ConcurrentHashMap<String, Export> exports = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, String> unavailable = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, Object> locks = new ConcurrentHashMap<>();
    /** Open volumes that are not served: receiving a mirror, handing over, or moved away (see {@link Ownership}). */
    private final ConcurrentHashMap<String, Export> held = new ConcurrentHashMap<>();
    private final ConcurrentHashMap<String, Ownership> ownership = new ConcurrentHashMap<>();

    /**
     * @param defaultAllow the policy for volumes without an access list: allow every client, or none.
     */
    public VolumeManager(final VolumeService volumes, final StorageExecutor storage, final boolean defaultAllow) {
        this.volumes = volumes;
        this.storage = storage;
        this.defaultAllow = defaultAllow;
    }

    public VolumeService volumes() {
        return volumes;
    }

    public boolean defaultAllow() {
        return defaultAllow;
    }

    /** Open {@code volume@snapshot} exports, by export name. */
    private final Map<String, Export> snapshotExports = new java.util.HashMap<>();

    private Object lock(final String name) {
        return locks.computeIfAbsent(name, n -> new Object());
    }

    /**
     * Opens every volume of the data directory. A volume locked by another process fails the start (two
     * servers must never serve one volume); any other problem leaves that volume out and is reported in
     * {@link #unavailable()}.
     */
    public void openAll() throws VolumeException {
        for (final VolumeMetadata meta : volumes.list()) {
            try {
                open(meta.name());
            } catch (final VolumeException e) {
                if (e.code() == VolumeException.Code.LOCKED) {
                    throw e;
                }
                LOG.error("volume {} is not served: {}", meta.name(), e.getMessage());
                unavailable.put(meta.name(), e.getMessage());
            }
        }
    }

    private Export open(final String name) throws VolumeException {
        final Volume volume = volumes.openVolume(name, storage);
        try {
            final Export export = Export.of(volume);
            final List<String> acl = volumes.readAcl(name);
            export.accessList(acl == null ? null : AccessList.parse(acl));
            final Ownership owner = volumes.readSideRecord(name, VolumeService.MIRROR_RECORD, Ownership.class);
            ownership.put(name, owner == null ? Ownership.DEFAULT : owner);
            if (owner == null || owner.served()) {
                exports.put(name, export);
            } else {
                LOG.info("volume {} is {} (epoch {}); not served", name, owner.state(), owner.epoch());
                held.put(name, export);
            }
            unavailable.remove(name);
            return export;
        } catch (final VolumeException | RuntimeException e) {
            volume.close();
            throw e;
        }
    }

    /** Creates a volume and serves it at once. */
    public Export create(final String name, final long size, final String devicePath, final String description,
                         final boolean readOnly) throws VolumeException {
        VolumeService.checkName(name);
        synchronized (lock(name)) {
            volumes.create(name, size, devicePath, description, readOnly);
            return open(name);
        }
    }

    public Export export(final String name) throws VolumeException {
        VolumeService.checkName(name);
        Export export = exports.get(name);
        if (export == null) {
            export = held.get(name);
        }
        if (export == null) {
            final String why = unavailable.get(name);
            if (why != null) {
                throw new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "' is not being served: "
                    + why);
            }
            throw new VolumeException(VolumeException.Code.NOT_FOUND, "volume '" + name + "' not found; list the"
                + " volumes with GET /v1/volumes");
        }
        return export;
    }

    public List<Export> all() {
        final List<Export> list = new ArrayList<>(exports.values());
        list.addAll(held.values());
        list.sort(Comparator.comparing(Export::name));
        return list;
    }

    /** Volumes present in the data directory that could not be opened, with the reason. */
    public Map<String, String> unavailable() {
        return new TreeMap<>(unavailable);
    }

    /** Grows a file volume; new connections see the new size. */
    public Export grow(final String name, final long size) throws VolumeException {
        synchronized (lock(name)) {
            final Export export = served(name);
            if (export.volume().writeObserver() != null) {
                throw new VolumeException(VolumeException.Code.LOCKED, "volume '" + name + "' is being mirrored;"
                    + " grow it after the mirror ends, or abort the mirror first");
            }
            volumes.grow(export.volume(), size);
            return export;
        }
    }

    /**
     * Replaces the access list ({@code null}: back to the default policy) and disconnects clients that it no
     * longer allows.
     *
     * @throws IllegalArgumentException if an entry is not a network.
     */
    public Export setAccessList(final String name, final List<String> allow) throws VolumeException {
        synchronized (lock(name)) {
            final Export export = served(name);
            final AccessList list = allow == null ? null : AccessList.parse(allow);
            volumes.writeAcl(name, list == null ? null : list.entries());
            export.accessList(list);
            for (final NbdTransmissionHandler connection : export.connections()) {
                if (!allowed(export, connection.remoteAddress())) {
                    LOG.info("disconnecting client={} export={}: no longer allowed by the access list",
                        connection.remoteAddress(), name);
                    connection.disconnect();
                }
            }
            return export;
        }
    }

    /**
     * Stops serving a volume and deletes it.
     *
     * @param force disconnect connected clients first; without it, connected clients make this fail.
     */
    public void delete(final String name, final boolean force) throws VolumeException {
        synchronized (lock(name)) {
            final Export heldExport = held.remove(name);
            if (heldExport != null) {
                // Not served: only a mirror source's connections can be open; they go at once.
                heldExport.close();
                heldExport.connections().forEach(NbdTransmissionHandler::forceClose);
                waitForConnections(heldExport);
                heldExport.volume().close();
                volumes.delete(name);
                ownership.remove(name);
                return;
            }
            final Export export = exports.get(name);
            if (export == null) {
                volumes.delete(name);
                unavailable.remove(name);
                return;
            }
            if (export.volume().writeObserver() != null && !force) {
                throw new VolumeException(VolumeException.Code.LOCKED, "volume '" + name + "' is being mirrored;"
                    + " abort the mirror first (DELETE /v1/volumes/" + name + "/mirror) or delete with force=true");
            }
            final List<NbdTransmissionHandler> connected = export.connections();
            if (!connected.isEmpty() && !force) {
                throw new VolumeException(VolumeException.Code.LOCKED, "volume '" + name + "' has " + connected.size()
                    + " connected client(s); disconnect them first or delete with force=true");
            }
            // No new connections from here on, then let the connected ones finish and go. Connections are asked
            // again on every pass, so one that registered while we looked is drained too.
            closeSnapshotExports(name);
            exports.remove(name);
            export.close();
            final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!export.connections().isEmpty() && System.nanoTime() < deadline) {
                for (final NbdTransmissionHandler connection : export.connections()) {
                    connection.disconnect();
                }
                try {
                    Thread.sleep(20);
                } catch (final InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            for (final NbdTransmissionHandler connection : export.connections()) {
                LOG.warn("volume {}: client {} did not finish within 30 s; closing it", name,
                    connection.remoteAddress());
                connection.forceClose();
            }
            export.volume().close();
            volumes.delete(name);
            ownership.remove(name);
        }
    }

    // ------------------------------------------------------------------------------------ ownership (mirroring)

    /** The served export {@code name}; a held one (receiving, moved, handing over) is refused with its state. */
    public Export served(final String name) throws VolumeException {
        final Export export = export(name);
        if (held.containsKey(name)) {
            final Ownership owner = ownership(name);
            final String where = owner.state().equals(Ownership.MOVED) && owner.peer() != null
                ? " to " + owner.peer() + " at epoch " + owner.epoch() : "";
            throw new VolumeException(VolumeException.Code.CORRUPT, "volume '" + name + "' is " + owner.state()
                + where + ", not served here, and takes no changes; see GET /v1/volumes/" + name);
        }
        return export;
    }

    /** Who owns {@code name} now. */
    public Ownership ownership(final String name) {
        return ownership.getOrDefault(name, Ownership.DEFAULT);
    }

    /** Whether {@code name} is open but not served. */
    public boolean isHeld(final String name) {
        return held.containsKey(name);
    }

    /** The held export {@code name}, or {@code null}. */
    public Export heldExport(final String name) {
        return held.get(name);
    }

    /** Records a new ownership durably (fsynced) and then believes it. */
    public void recordOwnership(final String name, final Ownership record) throws VolumeException {
        volumes.writeSideRecord(name, VolumeService.MIRROR_RECORD, record);
        ownership.put(name, record);
    }

    /** Creates a volume that is held from its first moment with {@code record} (a mirror destination). */
    public Export createHeld(final String name, final long size, final Ownership record) throws VolumeException {
        VolumeService.checkName(name);
        synchronized (lock(name)) {
            volumes.create(name, size, null, "", false, java.util.Map.of(VolumeService.MIRROR_RECORD, record));
            return open(name);
        }
    }

    /** Starts serving a held volume (a destination after its cutover, or a source that stays). */
    public Export adopt(final String name) throws VolumeException {
        synchronized (lock(name)) {
            final Export export = held.remove(name);
            if (export == null) {
                return export(name);
            }
            // A fresh export: connections of the held one (the mirror source's) never carry over.
            final Export served = new Export(export.name(), export.description(), export.volume(), export.readOnly());
            served.accessList(export.accessList());
            export.close();
            export.connections().forEach(NbdTransmissionHandler::forceClose);
            exports.put(name, served);
            LOG.info("volume {} is served from now on", name);
            return served;
        }
    }

    /**
     * Stops serving {@code name} without closing it: no new connection finds it, and the connected ones are closed
     * at once, without answering requests still held (their clients replay them elsewhere).
     */
    public Export withdraw(final String name) {
        synchronized (lock(name)) {
            final Export export = exports.remove(name);
            if (export == null) {
                return held.get(name);
            }
            export.close();
            held.put(name, export);
            export.connections().forEach(NbdTransmissionHandler::forceClose);
            waitForConnections(export);
            return export;
        }
    }

    private static void waitForConnections(final Export export) {
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (!export.connections().isEmpty() && System.nanoTime() < deadline) {
            try {
                Thread.sleep(5);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }

    // ------------------------------------------------------------------------------------------------ snapshots

    /** The snapshots of a volume, oldest first. */
    public List<LayeredDevice.SnapshotInfo> snapshots(final String name) throws VolumeException {
        try {
            return layers(export(name)).snapshots();
        } catch (final IOException e) {
            throw ioError("list the snapshots of", name, e);
        }
    }

    /**
     * Takes snapshot {@code snapshot} of a live volume: instant, under a freeze of a few milliseconds; writes
     * replied to before the call are in it.
     */
    public LayeredDevice.SnapshotInfo createSnapshot(final String name, final String snapshot) throws VolumeException {
        checkSnapshotName(snapshot);
        final Export export = served(name);
        refuseWhileMirrored(export, "take a snapshot of");
        final LayeredDevice layers = layers(export);
        try {
            layers.createSnapshot(snapshot, Instant.now().truncatedTo(ChronoUnit.MILLIS));
            return find(layers.snapshots(), snapshot);
        } catch (final SnapshotException e) {
            throw VolumeService.snapshotError(e);
        } catch (final IOException e) {
            throw ioError("snapshot", name, e);
        }
    }

    /**
     * Checks that {@code snapshot} exists and that the volume is not being mirrored, so that a delete can be refused
     * at once rather than as a failed run.
     */
    public void requireSnapshot(final String name, final String snapshot) throws VolumeException {
        find(snapshots(name), snapshot);
        refuseWhileMirrored(served(name), "delete snapshot '" + snapshot + "' of");
    }

    /**
     * Deletes a snapshot: its export's clients are disconnected, then its layer is merged into the layer(s) above
     * while the volume stays online. Can take as long as copying the data only that snapshot holds.
     */
    public void deleteSnapshot(final String name, final String snapshot) throws VolumeException {
        final Export export = served(name);
        refuseWhileMirrored(export, "delete snapshot '" + snapshot + "' of");
        final LayeredDevice layers = layers(export);
        closeSnapshotExport(name + "@" + snapshot);
        try {
            layers.deleteSnapshot(snapshot);
        } catch (final SnapshotException e) {
            throw VolumeService.snapshotError(e);
        } catch (final IOException e) {
            throw ioError("delete a snapshot of", name, e);
        }
    }

    /**
     * Rolls a volume back to a snapshot. Refused while clients are connected: a running guest's page cache would
     * no longer match its disc. Disconnect them (or stop the VM) first.
     */
    public void rollback(final String name, final String snapshot) throws VolumeException {
        synchronized (lock(name)) {
            final Export export = served(name);
            refuseWhileMirrored(export, "roll back");
            final int clients = export.connections().size();
            if (clients > 0) {
                throw new VolumeException(VolumeException.Code.CONFLICT, "volume '" + name + "' has " + clients
                    + " connected client(s); stop the VM or disconnect them (DELETE /v1/volumes/" + name
                    + "/clients/ID), then roll back");
            }
            try {
                layers(export).rollback(snapshot);
            } catch (final SnapshotException e) {
                throw VolumeService.snapshotError(e);
            } catch (final IOException e) {
                throw ioError("roll back", name, e);
            }
        }
    }

    /** Creates and serves volume {@code newName} from a snapshot; the frozen layers are shared, not copied. */
    public Export cloneVolume(final String name, final String snapshot, final String newName) throws VolumeException {
        VolumeService.checkName(newName);
        synchronized (lock(newName)) {
            volumes.cloneVolume(served(name).volume(), snapshot, newName);
            return open(newName);
        }
    }

    /** Snapshot names follow the volume name rules; {@code @} separates them in export names. */
    public static void checkSnapshotName(final String snapshot) throws VolumeException {
        try {
            VolumeService.checkName(snapshot);
        } catch (final VolumeException e) {
            throw new VolumeException(VolumeException.Code.INVALID_NAME, e.getMessage().replace("volume", "snapshot"),
                e);
        }
    }

    /**
     * A mirror copies the snapshot tree as it was when it started: a snapshot taken, deleted or rolled back to
     * meanwhile would leave the destination different from the source (the layers hold the same refusal, so a
     * mirror starting at the same moment cannot slip between this check and the change).
     */
    private static void refuseWhileMirrored(final Export export, final String what) throws VolumeException {
        if (export.volume().writeObserver() != null) {
            throw new VolumeException(VolumeException.Code.CONFLICT, "cannot " + what + " volume '" + export.name()
                + "' while it is being mirrored: a mirror moves the snapshots as they were when it started; wait for"
                + " the mirror to end, or abort it (DELETE /v1/volumes/" + export.name() + "/mirror)");
        }
    }

    private static LayeredDevice layers(final Export export) throws VolumeException {
        final LayeredDevice layers = export.volume().layers();
        if (layers == null) {
            throw new VolumeException(VolumeException.Code.CONFLICT, "'" + export.name() + "' is a snapshot; snapshot"
                + " operations work on the volume");
        }
        return layers;
    }

    private static LayeredDevice.SnapshotInfo find(final List<LayeredDevice.SnapshotInfo> all, final String snapshot)
        throws VolumeException {
        for (final LayeredDevice.SnapshotInfo info : all) {
            if (info.name().equals(snapshot)) {
                return info;
            }
        }
        throw new VolumeException(VolumeException.Code.SNAPSHOT_NOT_FOUND, "no snapshot '" + snapshot + "'; list"
            + " them with GET /v1/volumes/NAME/snapshots");
    }

    private static VolumeException ioError(final String what, final String name, final IOException e) {
        return new VolumeException(VolumeException.Code.IO_ERROR, "cannot " + what + " volume '" + name + "': "
            + e.getMessage(), e);
    }

    /**
     * The read-only export of {@code volume@snapshot}, opened on first use and kept until the snapshot or its
     * volume goes. Its access list is the volume's.
     */
    private Export snapshotExport(final String exportName) {
        final int at = exportName.indexOf('@');
        final Export volume = exports.get(exportName.substring(0, at));
        if (volume == null || volume.volume().layers() == null) {
            return null;
        }
        synchronized (snapshotExports) {
            final Export existing = snapshotExports.get(exportName);
            if (existing != null) {
                return existing;
            }
            final String snapshot = exportName.substring(at + 1);
            try {
                final BlockDevice view = volume.volume().layers().snapshotView(snapshot);
                final VolumeMetadata m = volume.volume().metadata();
                final VolumeMetadata viewMetadata = new VolumeMetadata(m.formatVersion(), m.id(), exportName, m.kind(),
                    m.size(), m.devicePath(), "snapshot " + snapshot + " of " + m.name() + " (read-only)", true,
                    m.created());
                final Export export = Export.of(new Volume(viewMetadata, view, storage, () -> { }));
                snapshotExports.put(exportName, export);
                return export;
            } catch (final IOException e) {
                return null; // no such snapshot: to the client, like a missing export
            }
        }
    }

    /** Stops serving {@code volume@snapshot}: disconnects its clients and closes its view. */
    private void closeSnapshotExport(final String exportName) {
        final Export export;
        synchronized (snapshotExports) {
            export = snapshotExports.remove(exportName);
        }
        if (export == null) {
            return;
        }
        export.close();
        for (final NbdTransmissionHandler connection : export.connections()) {
            connection.disconnect();
        }
        final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!export.connections().isEmpty() && System.nanoTime() < deadline) {
            try {
                Thread.sleep(10);
            } catch (final InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        for (final NbdTransmissionHandler connection : export.connections()) {
            connection.forceClose();
        }
        export.volume().close();
    }

    private void closeSnapshotExports(final String volumeName) {
        final List<String> names;
        synchronized (snapshotExports) {
            names = snapshotExports.keySet().stream().filter(n -> n.startsWith(volumeName + "@")).toList();
        }
        names.forEach(this::closeSnapshotExport);
    }

    // ------------------------------------------------------------------------------------------------ registry

    @Override
    public Export find(final String name, final SocketAddress client) {
        if (name.indexOf('@') > 0) {
            final Export volume = exports.get(name.substring(0, name.indexOf('@')));
            if (volume == null || !allowed(volume, client)) {
                return null;
            }
            return snapshotExport(name);
        }
        Export export = exports.get(name);
        if (export == null && name.isEmpty() && exports.size() == 1) {
            // The empty name is the NBD default export: the only volume, when there is exactly one.
            export = exports.values().iterator().next();
        }
        return export != null && allowed(export, client) ? export : null;
    }

    @Override
    public List<Export> list(final SocketAddress client) {
        final List<Export> list = new ArrayList<>();
        for (final Export export : all()) {
            if (allowed(export, client)) {
                list.add(export);
            }
        }
        return list;
    }

    /** Whether {@code client} may open {@code export}; a refused client is treated as if it did not exist. */
    public boolean allowed(final Export export, final SocketAddress client) {
        final AccessList list = export.accessList();
        if (list != null) {
            return list.allows(client);
        }
        return defaultAllow || !(client instanceof InetSocketAddress);
    }

    /** Syncs and closes every volume (after the NBD server has stopped). */
    @Override
    public void close() {
        for (final String name : exports.keySet()) {
            closeSnapshotExports(name);
        }
        for (final Export export : exports.values()) {
            export.volume().close();
        }
        for (final Export export : held.values()) {
            export.volume().close();
        }
        exports.clear();
        held.clear();
    }
}
