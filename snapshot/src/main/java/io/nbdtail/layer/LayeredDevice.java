package io.nbdtail.layer;

import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.FaultPoints;
import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.StorageException;
import io.nbdtail.storage.StorageIo;
import io.nbdtail.storage.nativeio.NativeIo;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.locks.StampedLock;

/**
 * A volume's bytes as a chain of copy-on-write layers: frozen snapshot layers below, one writable active layer on
 * top (see {@code docs/formats.md} and {@code docs/snapshots.md}). Without snapshots it is the plain base file
 * or device, and every call goes straight to it.
 *
 * <p><b>Writes.</b> A write to a cluster the active layer holds goes in place. Otherwise, under the cluster's
 * lock, the whole cluster is written to the active layer (the bytes the write does not cover are read from the
 * current owner first: copy-on-write head and tail), and only then is the cluster marked {@link ClusterMap#DATA}
 * in memory. TRIM and WRITE_ZEROES over whole clusters mark them {@link ClusterMap#ZERO}, never
 * {@link ClusterMap#NONE}, so data below is never exposed.
 *
 * <p><b>Sync.</b> {@link #sync()} captures the active map's changed pages, syncs the active data, then writes and
 * syncs the captured pages: the map on disc never points at data that is not durable.
 *
 * <p><b>Changes to the chain</b> (snapshot, rollback, the end of a delete) happen under a short I/O freeze: the
 * {@link StampedLock} gate that every call holds for reading is taken for writing, which waits for the calls in
 * progress and holds new ones back. Callers serialise chain changes per volume.
 */
public final class LayeredDevice implements LayeredBlockDevice {
    private static final Logger LOG = LoggerFactory.getLogger(LayeredDevice.class);

    /** The copy-on-write granularity of new volumes' layers. */
    public static final int CLUSTER_SIZE = 64 * 1024;
    /** Layers in one chain, the active layer included; a snapshot beyond it is refused. */
    public static final int MAX_DEPTH = 16;
    static final String LAYERS = "layers";
    private static final int STRIPES = 1024;
    /** 0600: the bytes of somebody's disc are nobody else's business. */
    static final java.nio.file.attribute.FileAttribute<?> OWNER_ONLY = java.nio.file.attribute.PosixFilePermissions
        .asFileAttribute(java.nio.file.attribute.PosixFilePermissions.fromString("rw-------"));

    private final Path dir;
    private final UUID volumeId;
    private final StorageIo io;
    private final boolean readOnly;
    /** Changes only by {@link #grow}, which only a plain volume (no layers yet) allows. */
    private volatile long size;
    private final int clusterSize;
    private final BlockDevice baseDevice;
    private final Path basePath;
    private final StampedLock gate = new StampedLock();
    /** Serialises snapshot operations on this volume (reliability.md S10): each fully succeeds or fully fails. */
    private final ReentrantLock operation = new ReentrantLock();
    private final ReentrantLock[] stripes = new ReentrantLock[STRIPES];
    private final ArrayBlockingQueue<ByteBuffer> clusterBuffers = new ArrayBlockingQueue<>(32);
    private final ByteBuffer zeros;
    private final long zerosAddress;
    /** Every layer the manifest lists, by id. Changed only under the freeze. */
    private final Map<UUID, Layer> layers = new HashMap<>();
    private volatile Manifest manifest;
    private volatile Chain live;
    private volatile boolean closed;
    /** Set when a manifest write failed half-way: the disc may hold either manifest, so nothing more is written. */
    private volatile StorageException broken;
    /** Why the chain may not change now (a mirror is copying it), or {@code null}; see {@link #holdChain}. */
    private volatile String chainHeld;

    private LayeredDevice(final Path dir, final UUID volumeId, final StorageIo io, final boolean readOnly,
                          final BlockDevice baseDevice, final Path basePath, final long size, final int clusterSize) {
        this.dir = dir;
        this.volumeId = volumeId;
        this.io = io;
        this.readOnly = readOnly;
        this.baseDevice = baseDevice;
        this.basePath = basePath;
        this.size = size;
        this.clusterSize = clusterSize;
        for (int i = 0; i < STRIPES; i++) {
            stripes[i] = new ReentrantLock();
        }
        this.zeros = ByteBuffer.allocateDirect(clusterSize);
        this.zerosAddress = MemorySegment.ofBuffer(zeros).address();
    }

    /**
     * Opens a volume's layers.
     *
     * @param baseDevice the volume's original data ({@code data.raw} or its block device), or {@code null} if the
     *                   manifest no longer lists a base layer (a deleted oldest snapshot). Owned by the result.
     * @throws LayerCorruptException if the manifest or a map cannot be trusted.
     * @throws NeedsCheckException   if the manifest says the volume needs {@code nbdtail check}.
     */
    public static LayeredDevice open(final Path dir, final UUID volumeId, final long size, final BlockDevice baseDevice,
                                     final Path basePath, final NativeIo nativeIo, final boolean readOnly)
        throws IOException {
        return open(dir, volumeId, size, baseDevice, basePath, StorageIo.of(nativeIo), readOnly);
    }

    /** {@link #open(Path, UUID, long, BlockDevice, Path, NativeIo, boolean)} with every file change through {@code io}. */
    public static LayeredDevice open(final Path dir, final UUID volumeId, final long size, final BlockDevice baseDevice,
                                     final Path basePath, final StorageIo io, final boolean readOnly)
        throws IOException {
        final Manifest manifest = Manifest.read(dir);
        final int clusterSize = manifest == null ? CLUSTER_SIZE : manifest.clusterSize();
        final LayeredDevice device = new LayeredDevice(dir, volumeId, io, readOnly, baseDevice, basePath,
            size, clusterSize);
        try {
            device.load(manifest);
            return device;
        } catch (final IOException | RuntimeException e) {
            final boolean baseTaken = device.layers.values().stream().anyMatch(l -> l.data() == baseDevice);
            device.closeLayers();
            if (baseDevice != null && !baseTaken) {
                baseDevice.close();
            }
            throw e;
        }
    }

    private void load(final Manifest m) throws IOException {
        if (m == null) {
            if (baseDevice == null) {
                throw new LayerCorruptException(dir + " has neither a manifest nor base data");
            }
            final UUID baseId = new UUID(volumeId.getMostSignificantBits(), volumeId.getLeastSignificantBits());
            final Layer base = new Layer(baseId, baseDevice, null, basePath);
            layers.put(baseId, base);
            live = new Chain(new Layer[] {base}, null, size, clusterSize);
            return;
        }
        if (!m.volumeId().equals(volumeId) || m.size() != size) {
            throw new LayerCorruptException(dir.resolve(Manifest.FILE) + " belongs to volume " + m.volumeId() + " of "
                + m.size() + " bytes, not to " + volumeId + " of " + size + " bytes");
        }
        if (m.needsCheck()) {
            throw new NeedsCheckException("volume in " + dir + " needs checking: " + m.checkReason()
                + "; run 'nbdtail check " + dir.getFileName() + " --data-dir DIR' with the server stopped");
        }
        for (final Manifest.LayerRecord r : m.layers()) {
            layers.put(r.id(), openLayer(r));
        }
        if (baseDevice != null && m.layers().stream().noneMatch(Manifest.LayerRecord::base)) {
            baseDevice.close(); // a leftover base file; check reports it
        }
        manifest = m;
        live = chainOf(m, m.active().id());
    }

    private Layer openLayer(final Manifest.LayerRecord r) throws IOException {
        if (r.base()) {
            if (baseDevice == null) {
                throw new LayerCorruptException("the manifest lists base layer " + r.id() + " but its data is missing");
            }
            return new Layer(r.id(), baseDevice, null, basePath);
        }
        final Path data = dataPath(dir, r.id());
        final Path mapPath = mapPath(dir, r.id());
        if (!Files.exists(data) || !Files.exists(mapPath)) {
            throw new LayerCorruptException("layer " + r.id() + (r.snapshot() == null ? " (active)"
                : " (snapshot " + r.snapshot() + ")") + " is missing " + (Files.exists(data) ? mapPath : data));
        }
        final ClusterMap map = ClusterMap.open(mapPath, r.id(), size, clusterSize, readOnly, io);
        try {
            return new Layer(r.id(), FileBlockDevice.open(data, readOnly, io), map, data);
        } catch (final IOException | RuntimeException e) {
            map.close();
            throw e;
        }
    }

    private Chain chainOf(final Manifest m, final UUID top) {
        final List<Manifest.LayerRecord> records = m.chain(top);
        final Layer[] chain = new Layer[records.size()];
        for (int i = 0; i < chain.length; i++) {
            chain[i] = layers.get(records.get(i).id());
        }
        if (chain.length == 1 && chain[0].isBase()) {
            return new Chain(chain, null, size, clusterSize);
        }
        return new Chain(chain, Chain.owners(chain, size, clusterSize), size, clusterSize);
    }

    static Path dataPath(final Path dir, final UUID id) {
        return dir.resolve(LAYERS).resolve(id + ".data");
    }

    static Path mapPath(final Path dir, final UUID id) {
        return dir.resolve(LAYERS).resolve(id + ".map");
    }

    // ------------------------------------------------------------------------------------------------ queries

    /** The current manifest, or {@code null} for a plain volume. */
    public Manifest manifest() {
        return manifest;
    }

    public int clusterSize() {
        return clusterSize;
    }

    /** Layers in the live chain, the active layer included. */
    public int depth() {
        return live.layers.length;
    }

    /** Whether snapshot {@code name} is below the active layer (so {@code qemu:dirty-bitmap:NAME} exists). */
    public int liveIndexOf(final String name) {
        final Manifest m = manifest;
        if (m == null) {
            return -1;
        }
        final Manifest.LayerRecord r = m.snapshot(name);
        final Chain chain = live;
        for (int i = 0; r != null && i < chain.layers.length; i++) {
            if (chain.layers[i].id().equals(r.id())) {
                return i;
            }
        }
        return -1;
    }

    /** The snapshots in the live chain, oldest first: the names {@code qemu:dirty-bitmap:} offers. */
    @Override
    public List<String> dirtyBitmaps() {
        final Manifest m = manifest;
        final List<String> names = new ArrayList<>();
        if (m != null) {
            for (final Manifest.LayerRecord r : m.chain(m.active().id())) {
                if (!r.active()) {
                    names.add(r.snapshot());
                }
            }
        }
        return names;
    }

    /** Bytes the layer holds as data: its {@link ClusterMap#DATA} clusters, or the base file's allocation. */
    public long ownedBytes(final UUID id) throws IOException {
        final Layer layer = layers.get(id);
        if (layer == null) {
            return 0;
        }
        if (layer.isBase()) {
            if (layer.data().isBlockDevice()) {
                return size;
            }
            return allocated(layer.data());
        }
        return layer.map().count(ClusterMap.DATA) * clusterSize;
    }

    /** The bytes of {@code device} that are not holes (SEEK_DATA/SEEK_HOLE). */
    static long allocated(final BlockDevice device) throws StorageException {
        final long end = device.size();
        final long[] total = {0};
        long pos = 0;
        while (pos < end) {
            final long[] walked = {0};
            device.allocation(pos, end - pos, (length, flags) -> {
                walked[0] += length;
                if ((flags & ExtentSink.HOLE) == 0) {
                    total[0] += length;
                }
            }, 1024);
            pos += Math.max(walked[0], 1);
        }
        return total[0];
    }

    // ------------------------------------------------------------------------------------------------ I/O

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isBlockDevice() {
        return baseDevice != null && baseDevice.isBlockDevice() && live.plain();
    }

    @Override
    public void read(final long address, final int length, final long offset) throws StorageException {
        final long stamp = gate.readLock();
        try {
            live.read(address, length, offset);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    @Override
    public void read(final ByteBuffer dst, final long offset) throws StorageException {
        final int n = dst.remaining();
        if (dst.isDirect()) {
            read(MemorySegment.ofBuffer(dst).address(), n, offset);
        } else {
            final ByteBuffer direct = ByteBuffer.allocateDirect(n);
            read(MemorySegment.ofBuffer(direct).address(), n, offset);
            dst.put(direct);
            return;
        }
        dst.position(dst.limit());
    }

    @Override
    public void write(final ByteBuffer src, final long offset) throws StorageException {
        final int n = src.remaining();
        if (src.isDirect()) {
            write(MemorySegment.ofBuffer(src).address(), n, offset);
        } else {
            final ByteBuffer direct = ByteBuffer.allocateDirect(n).put(src.duplicate()).flip();
            write(MemorySegment.ofBuffer(direct).address(), n, offset);
        }
        src.position(src.limit());
    }

    @Override
    public void write(final long address, final int length, final long offset) throws StorageException {
        final long stamp = gate.readLock();
        try {
            checkBroken();
            final Chain chain = live;
            if (chain.plain()) {
                chain.layers[0].data().write(address, length, offset);
                return;
            }
            final BlockDevice top = chain.layers[chain.top].data();
            final byte mine = (byte) chain.top;
            final long end = offset + length;
            long pos = offset;
            while (pos < end) {
                final long cluster = pos >>> chain.shift;
                if (chain.owner[(int) cluster] == mine) {
                    final long runEnd = chain.runEnd(pos, end);
                    top.write(address + (pos - offset), (int) (runEnd - pos), pos);
                    pos = runEnd;
                } else {
                    final long clusterEnd = Math.min(end, (cluster + 1) << chain.shift);
                    copyOnWrite(chain, cluster, address + (pos - offset), pos, (int) (clusterEnd - pos));
                    pos = clusterEnd;
                }
            }
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * Writes {@code length} bytes at {@code pos} into a cluster the active layer does not hold yet: the whole
     * cluster goes to the active layer, then the cluster is marked held. Under the cluster's lock, so two writers
     * to different parts of one new cluster cannot overwrite each other's bytes with the old contents.
     */
    private void copyOnWrite(final Chain chain, final long cluster, final long source, final long pos,
                             final int length) throws StorageException {
        final ReentrantLock lock = stripe(cluster);
        lock.lock();
        try {
            final Layer top = chain.layers[chain.top];
            if (chain.owner[(int) cluster] == (byte) chain.top) {
                top.data().write(source, length, pos);
                return;
            }
            final long start = cluster << chain.shift;
            final int clusterLength = (int) (Math.min(start + clusterSize, size) - start);
            if (length == clusterLength) {
                top.data().write(source, length, pos);
            } else {
                final ByteBuffer buffer = takeBuffer();
                try {
                    final MemorySegment whole = MemorySegment.ofBuffer(buffer);
                    chain.read(whole.address(), clusterLength, start);
                    MemorySegment.copy(MemorySegment.ofAddress(source).reinterpret(length), 0, whole, pos - start,
                        length);
                    top.data().write(whole.address(), clusterLength, start);
                } finally {
                    giveBuffer(buffer);
                }
            }
            FaultPoints.reach("cow.data-written");
            top.map().set(cluster, ClusterMap.DATA);
            chain.owner[(int) cluster] = (byte) chain.top;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void writeZeroes(final long offset, final long length, final boolean mayUnmap, final boolean fastOnly)
        throws StorageException {
        final long stamp = gate.readLock();
        try {
            checkBroken();
            final Chain chain = live;
            if (chain.plain()) {
                chain.layers[0].data().writeZeroes(offset, length, mayUnmap, fastOnly);
                return;
            }
            final Layer top = chain.layers[chain.top];
            final long end = offset + length;
            long pos = offset;
            while (pos < end) {
                final long cluster = pos >>> chain.shift;
                final long start = cluster << chain.shift;
                final long clusterEnd = Math.min(start + clusterSize, size);
                final long pieceEnd = Math.min(end, clusterEnd);
                final int n = (int) (pieceEnd - pos);
                if (pos == start && pieceEnd == clusterEnd) {
                    markZero(chain, cluster);
                } else if (chain.owner[(int) cluster] == (byte) chain.top) {
                    top.data().writeZeroes(pos, n, mayUnmap, fastOnly);
                } else if ((chain.owner[(int) cluster] & Chain.ZERO_FLAG) != 0) {
                    // NOBODY or zero-marked: already reads as zeros
                } else if (fastOnly) {
                    throw new StorageException(StorageException.Kind.NOT_SUPPORTED, "zeroing part of a cluster that a"
                        + " snapshot holds needs a copy-on-write; write the zeros instead");
                } else {
                    copyOnWrite(chain, cluster, zerosAddress, pos, n);
                }
                pos = pieceEnd;
            }
        } finally {
            gate.unlockRead(stamp);
        }
    }

    @Override
    public void discard(final long offset, final long length) throws StorageException {
        final long stamp = gate.readLock();
        try {
            checkBroken();
            final Chain chain = live;
            if (chain.plain()) {
                chain.layers[0].data().discard(offset, length);
                return;
            }
            final long end = offset + length;
            long pos = offset;
            while (pos < end) {
                final long cluster = pos >>> chain.shift;
                final long start = cluster << chain.shift;
                final long clusterEnd = Math.min(start + clusterSize, size);
                final long pieceEnd = Math.min(end, clusterEnd);
                if (pos == start && pieceEnd == clusterEnd) {
                    markZero(chain, cluster);
                } else if (chain.owner[(int) cluster] == (byte) chain.top) {
                    chain.layers[chain.top].data().discard(pos, pieceEnd - pos);
                }
                // A partial TRIM of a cluster held below is a hint we may ignore: its contents stay as they were.
                pos = pieceEnd;
            }
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * Marks a whole cluster as zeros in the active layer (never as unallocated, which would expose the layers
     * below), then releases the active layer's copy of it.
     */
    private void markZero(final Chain chain, final long cluster) throws StorageException {
        final ReentrantLock lock = stripe(cluster);
        lock.lock();
        try {
            final byte o = chain.owner[(int) cluster];
            if (o == Chain.NOBODY || o == (byte) (chain.top | Chain.ZERO_FLAG)) {
                return;
            }
            final Layer top = chain.layers[chain.top];
            top.map().set(cluster, ClusterMap.ZERO);
            chain.owner[(int) cluster] = (byte) (chain.top | Chain.ZERO_FLAG);
            if (o == (byte) chain.top) {
                final long start = cluster << chain.shift;
                try {
                    top.data().discard(start, Math.min(start + clusterSize, size) - start);
                } catch (final StorageException e) {
                    LOG.debug("releasing a zeroed cluster failed: {}", e.getMessage());
                }
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        final long stamp = gate.readLock();
        try {
            return live.allocation(offset, length, sink, maxExtents);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /** {@code qemu:allocation-depth} of the live chain; see {@link Chain#depth}. */
    @Override
    public long depth(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        final long stamp = gate.readLock();
        try {
            return live.depth(offset, length, sink, maxExtents);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * {@code qemu:dirty-bitmap:SNAPSHOT} of the live chain: 1 where the volume changed since the snapshot.
     *
     * @return the bytes described, or -1 if the snapshot is no longer below the active layer.
     */
    @Override
    public long dirty(final String snapshot, final long offset, final long length, final ExtentSink sink,
                      final int maxExtents) {
        final long stamp = gate.readLock();
        try {
            final int index = liveIndexOf(snapshot);
            return index < 0 ? -1 : live.dirty(index, offset, length, sink, maxExtents);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    @Override
    public void prefetch(final long offset, final long length) {
        final Chain chain = live;
        if (chain.plain()) {
            chain.layers[0].data().prefetch(offset, length);
        }
    }

    @Override
    public void grow(final long newSize) throws StorageException {
        final long stamp = gate.readLock();
        try {
            if (!live.plain()) {
                throw new StorageException(StorageException.Kind.NOT_SUPPORTED, "a volume with snapshots cannot grow;"
                    + " delete its snapshots first");
            }
            live.layers[0].data().grow(newSize);
            size = newSize;
            live = new Chain(live.layers, null, newSize, clusterSize);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * Makes every completed write durable: captures the active map's changed pages, syncs the active data, then
     * writes and syncs the captured pages (in that order, so the map never points at data that is not durable).
     */
    @Override
    public void sync() throws StorageException {
        final long stamp = gate.readLock();
        try {
            checkBroken();
            syncActive(live);
        } catch (final StorageException e) {
            if (e.kind() == StorageException.Kind.IO_ERROR) {
                flagNeedsCheck("a sync failed: " + e.getMessage());
            }
            throw e;
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * Records in the manifest that the volume needs {@code nbdtail check} before it is served again (reliability.md
     * C8). Best effort: the disc that failed the sync may fail this write too, and the volume has stopped taking
     * writes either way.
     */
    private void flagNeedsCheck(final String reason) {
        final Manifest m = manifest;
        if (m == null || m.needsCheck() || readOnly) {
            return;
        }
        try {
            final Manifest flagged = m.withNeedsCheck(true, reason);
            flagged.write(dir, io);
            manifest = flagged;
            LOG.error("{}: marked as needing 'nbdtail check' ({})", dir.getFileName(), reason);
        } catch (final IOException e) {
            LOG.error("{}: could not record that the volume needs checking: {}", dir.getFileName(), e.toString());
        }
    }

    private static void syncActive(final Chain chain) throws StorageException {
        final Layer top = chain.layers[chain.top];
        if (top.isBase()) {
            top.data().sync();
            return;
        }
        final ClusterMap.Captured captured = top.map().capture();
        FaultPoints.reach("sync.captured");
        top.data().sync();
        FaultPoints.reach("sync.data-synced");
        top.map().persist(captured);
    }

    // ------------------------------------------------------------------------------------------------ snapshots

    /** Information about one snapshot, for listings. */
    public record SnapshotInfo(String name, UUID layer, String parent, Instant created, long ownedBytes,
                               boolean inLiveChain) {
    }

    /** The snapshots, oldest first, and the bytes each layer holds. */
    public List<SnapshotInfo> snapshots() throws IOException {
        final Manifest m = manifest;
        final List<SnapshotInfo> out = new ArrayList<>();
        if (m == null) {
            return out;
        }
        final List<Manifest.LayerRecord> liveChain = m.chain(m.active().id());
        for (final Manifest.LayerRecord r : m.layers()) {
            if (r.active()) {
                continue;
            }
            final Manifest.LayerRecord parent = r.parent() == null ? null : m.layer(r.parent());
            out.add(new SnapshotInfo(r.snapshot(), r.id(), parent == null ? null : parent.snapshot(),
                Instant.parse(r.created()), ownedBytes(r.id()), liveChain.contains(r)));
        }
        return out;
    }

    /** Bytes the active layer holds; for a plain volume, the base file's allocation. */
    public long activeOwnedBytes() throws IOException {
        return ownedBytes(live.layers[live.top].id());
    }

    /**
     * Takes snapshot {@code name}: the active layer is frozen under that name and a new, empty active layer goes
     * on top. Writes replied to before the call are in the snapshot (they are synced under the freeze before the
     * manifest names the snapshot); writes that arrive during the freeze wait and land in the new layer.
     */
    public void createSnapshot(final String name, final Instant now) throws IOException {
        acquireOperation();
        try {
            checkWritable();
            checkChainNotHeld("take snapshot '" + name + "' of");
            final Manifest before = manifest;
            if (before != null && before.snapshot(name) != null) {
                throw new SnapshotException(SnapshotException.Code.ALREADY_EXISTS, "snapshot '" + name
                    + "' exists already; choose another name or delete it first");
            }
            if (depth() >= MAX_DEPTH) {
                throw new SnapshotException(SnapshotException.Code.TOO_DEEP, "the volume has " + depth() + " layers, the"
                    + " most a chain may have (" + MAX_DEPTH + "); delete a snapshot (which merges its layer) and retry");
            }
            final UUID id = UUID.randomUUID();
            final Layer fresh = createLayer(id);
            boolean committed = false;
            final long stamp = gate.writeLock();
            try {
                final Chain chain = live;
                syncActive(chain);
                FaultPoints.reach("snapshot.synced");
                final String created = now.toString();
                final List<Manifest.LayerRecord> records = new ArrayList<>();
                final Manifest.LayerRecord oldActive;
                if (before == null) {
                    oldActive = new Manifest.LayerRecord(chain.layers[0].id(), null, name, created, true);
                    records.add(oldActive);
                } else {
                    oldActive = before.active();
                    for (final Manifest.LayerRecord r : before.layers()) {
                        records.add(r.active() ? new Manifest.LayerRecord(r.id(), r.parent(), name, created, r.base()) : r);
                    }
                }
                records.add(new Manifest.LayerRecord(id, oldActive.id(), null, created, false));
                final Manifest after = before == null
                    ? new Manifest(Manifest.FORMAT_VERSION, 1, volumeId, size, clusterSize, false, null, records, null)
                    : before.with(records, null);
                commit(after);
                committed = true;
                layers.put(id, fresh);
                final Layer[] chainLayers = java.util.Arrays.copyOf(chain.layers, chain.layers.length + 1);
                chainLayers[chain.layers.length] = fresh;
                final byte[] owner = chain.plain() ? Chain.owners(chainLayers, size, clusterSize) : chain.owner;
                live = new Chain(chainLayers, owner, size, clusterSize);
            } finally {
                gate.unlockWrite(stamp);
                if (!committed) {
                    abandon(fresh);
                }
            }
            LOG.info("{}: snapshot {} taken; active layer is now {}", dir.getFileName(), name, id);
        } finally {
            operation.unlock();
        }
    }

    /**
     * Makes the live disc the contents of snapshot {@code name} again: a new empty active layer on top of it
     * replaces the old active layer, whose data is dropped. The snapshot and every other snapshot stay. The caller
     * makes sure no client is connected (a running guest's caches would not match its disc).
     */
    public void rollback(final String name) throws IOException {
        acquireOperation();
        try {
            checkWritable();
            checkChainNotHeld("roll back");
            final Manifest before = requireManifest(name);
            final Manifest.LayerRecord target = before.snapshot(name);
            if (target == null) {
                throw noSuchSnapshot(name);
            }
            final UUID id = UUID.randomUUID();
            final Layer fresh = createLayer(id);
            boolean committed = false;
            final Manifest.LayerRecord oldActive = before.active();
            final long stamp = gate.writeLock();
            try {
                final List<Manifest.LayerRecord> records = new ArrayList<>();
                for (final Manifest.LayerRecord r : before.layers()) {
                    if (!r.active()) {
                        records.add(r);
                    }
                }
                records.add(new Manifest.LayerRecord(id, target.id(), null, Instant.now().toString(), false));
                final Manifest after = before.with(records, null);
                commit(after);
                committed = true;
                layers.put(id, fresh);
                live = chainOf(after, id);
            } finally {
                gate.unlockWrite(stamp);
                if (!committed) {
                    abandon(fresh);
                }
            }
            retire(oldActive.id());
            LOG.info("{}: rolled back to snapshot {}", dir.getFileName(), name);
        } finally {
            operation.unlock();
        }
    }

    /**
     * Deletes snapshot {@code name} by merging its layer into each layer directly above it: every cluster the
     * snapshot holds and the child does not is copied up (guest writes to the active layer during the merge win:
     * a cluster the child got meanwhile is skipped), the children are synced, then the manifest drops the layer
     * under a short freeze. A crash in between leaves a manifest that names the delete as pending, and
     * {@link #resumePending()} finishes it; copying again is harmless.
     */
    public void deleteSnapshot(final String name) throws IOException {
        acquireOperation();
        try {
            checkWritable();
            checkChainNotHeld("delete snapshot '" + name + "' of");
            final Manifest before = requireManifest(name);
            final Manifest.LayerRecord doomed = before.snapshot(name);
            if (doomed == null) {
                throw noSuchSnapshot(name);
            }
            final Layer layer = layers.get(doomed.id());
            if (layer.isBase() && layer.data().isBlockDevice()) {
                throw new SnapshotException(SnapshotException.Code.REFUSED, "snapshot '" + name + "' is the block device"
                    + " itself; it cannot be merged away. Roll back to it, or keep it");
            }
            for (final Manifest.LayerRecord child : before.children(doomed.id())) {
                if (!child.active() && shared(child.id())) {
                    throw new SnapshotException(SnapshotException.Code.REFUSED, "snapshot '" + child.snapshot()
                        + "' above '" + name + "' shares its files with a clone, so '" + name + "' cannot be merged into"
                        + " it; delete the clone first");
                }
            }
            final Manifest pending = before.with(before.layers(), new Manifest.Pending("delete", doomed.id()));
            final long stamp = gate.writeLock();
            try {
                commit(pending);
            } finally {
                gate.unlockWrite(stamp);
            }
            FaultPoints.reach("delete.pending-recorded");
            finishDelete(doomed.id());
            LOG.info("{}: snapshot {} deleted", dir.getFileName(), name);
        } finally {
            operation.unlock();
        }
    }

    /** Finishes an operation a crash interrupted; a no-op when none is pending. */
    public void resumePending() throws IOException {
        acquireOperation();
        try {
            final Manifest m = manifest;
            if (m != null && m.pending() != null && !readOnly) {
                LOG.warn("{}: finishing the interrupted delete of layer {}", dir.getFileName(), m.pending().layer());
                finishDelete(m.pending().layer());
            }
        } finally {
            operation.unlock();
        }
    }

    private void finishDelete(final UUID doomedId) throws IOException {
        final Layer doomed = layers.get(doomedId);
        for (final Manifest.LayerRecord child : manifest.children(doomedId)) {
            mergeInto(doomed, child);
        }
        FaultPoints.reach("delete.merged");
        final long stamp = gate.writeLock();
        try {
            final Manifest before = manifest;
            final Manifest.LayerRecord doomedRecord = before.layer(doomedId);
            final List<Manifest.LayerRecord> records = new ArrayList<>();
            for (final Manifest.LayerRecord r : before.layers()) {
                if (r.id().equals(doomedId)) {
                    continue;
                }
                records.add(doomedId.equals(r.parent()) ? r.withParent(doomedRecord.parent()) : r);
            }
            final Manifest after = before.with(records, null);
            commit(after);
            layers.remove(doomedId);
            live = chainOf(after, after.active().id());
        } finally {
            gate.unlockWrite(stamp);
        }
        FaultPoints.reach("delete.committed");
        doomed.release();
        deleteFiles(doomed);
    }

    /**
     * Copies every cluster {@code from} holds and {@code child} does not into {@code child}, then makes
     * {@code child} durable. Idempotent. Runs beside guest I/O: each cluster is copied under its cluster lock and
     * the gate, so a concurrent guest write to the active child either lands first (and the copy skips the
     * cluster) or after (and overwrites the copied bytes).
     */
    private void mergeInto(final Layer from, final Manifest.LayerRecord childRecord) throws IOException {
        final Layer child = layers.get(childRecord.id());
        final long clusters = (size + clusterSize - 1) / clusterSize;
        final ByteBuffer buffer = takeBuffer();
        try {
            final long address = MemorySegment.ofBuffer(buffer).address();
            long c = from.isBase() ? 0 : from.map().nextUsed(0, clusters);
            while (c < clusters) {
                if (from.isBase()) {
                    c = nextBaseData(from, c, clusters);
                    if (c >= clusters) {
                        break;
                    }
                }
                final int state = from.isBase() ? ClusterMap.DATA : from.map().state(c);
                copyUp(from, child, c, state, address);
                c = from.isBase() ? c + 1 : from.map().nextUsed(c + 1, clusters);
            }
        } finally {
            giveBuffer(buffer);
        }
        final long stamp = gate.readLock();
        try {
            if (childRecord.active()) {
                syncActive(live);
            } else {
                child.data().sync();
                child.map().flush();
            }
        } finally {
            gate.unlockRead(stamp);
        }
    }

    private void copyUp(final Layer from, final Layer child, final long cluster, final int state,
                        final long address) throws StorageException {
        final long stamp = gate.readLock();
        final ReentrantLock lock = stripe(cluster);
        lock.lock();
        try {
            if (child.map().state(cluster) != ClusterMap.NONE) {
                return;
            }
            final long start = cluster * clusterSize;
            final int length = (int) (Math.min(start + clusterSize, size) - start);
            if (state == ClusterMap.DATA) {
                from.data().read(address, length, start);
                child.data().write(address, length, start);
            }
            child.map().set(cluster, state);
            final Chain chain = live;
            final int childIndex = indexIn(chain, child);
            final int fromIndex = indexIn(chain, from);
            if (childIndex >= 0 && fromIndex >= 0 && (chain.owner[(int) cluster] & Chain.INDEX_MASK) == fromIndex
                && chain.owner[(int) cluster] != Chain.NOBODY) {
                chain.owner[(int) cluster] = (byte) (state == ClusterMap.ZERO ? childIndex | Chain.ZERO_FLAG
                    : childIndex);
            }
        } finally {
            lock.unlock();
            gate.unlockRead(stamp);
        }
    }

    private static int indexIn(final Chain chain, final Layer layer) {
        for (int i = 0; i < chain.layers.length; i++) {
            if (chain.layers[i] == layer) {
                return i;
            }
        }
        return -1;
    }

    /** The first cluster at or after {@code from} in which the base file has data. */
    private long nextBaseData(final Layer base, final long from, final long clusters) throws StorageException {
        final long[] found = {-1};
        long pos = from * clusterSize;
        while (pos < size && found[0] < 0) {
            final long at = pos;
            final long[] walked = {0};
            base.data().allocation(at, size - at, (length, flags) -> {
                if (found[0] < 0 && (flags & ExtentSink.HOLE) == 0) {
                    found[0] = at + walked[0];
                }
                walked[0] += length;
            }, 64);
            pos = at + Math.max(walked[0], 1);
        }
        return found[0] < 0 ? clusters : Math.max(from, found[0] / clusterSize);
    }

    /**
     * Hard-links the files of snapshot {@code name}'s chain into {@code target} (a new volume directory) and
     * gives the clone its own empty active layer: a writable volume that shares the frozen layers and copies no
     * data. Returns the clone's manifest, already written.
     */
    public Manifest cloneTo(final String name, final Path target, final UUID cloneId, final Path targetBase,
                            final Instant now) throws IOException {
        acquireOperation();
        try {
            final Manifest m = requireManifest(name);
            final Manifest.LayerRecord snap = m.snapshot(name);
            if (snap == null) {
                throw noSuchSnapshot(name);
            }
            final List<Manifest.LayerRecord> chain = m.chain(snap.id());
            if (chain.size() + 1 > MAX_DEPTH) {
                throw new SnapshotException(SnapshotException.Code.TOO_DEEP, "a clone of '" + name + "' would have "
                    + (chain.size() + 1) + " layers, more than " + MAX_DEPTH + "; delete a snapshot below it first");
            }
            io.createDirectories(target.resolve(LAYERS));
            final List<Manifest.LayerRecord> records = new ArrayList<>();
            for (final Manifest.LayerRecord r : chain) {
                final Layer layer = layers.get(r.id());
                if (r.base()) {
                    if (layer.data().isBlockDevice()) {
                        throw new SnapshotException(SnapshotException.Code.REFUSED, "snapshot '" + name + "' rests on a"
                            + " block device, which a clone cannot share; copy the volume with nbdcopy instead");
                    }
                    io.link(targetBase, layer.dataPath());
                } else {
                    io.link(dataPath(target, r.id()), dataPath(dir, r.id()));
                    io.link(mapPath(target, r.id()), mapPath(dir, r.id()));
                }
                records.add(r);
            }
            final UUID active = UUID.randomUUID();
            ClusterMap.create(mapPath(target, active), active, size, clusterSize, io).close();
            createSparse(dataPath(target, active));
            io.syncDirectory(target.resolve(LAYERS));
            records.add(new Manifest.LayerRecord(active, snap.id(), null, now.toString(), false));
            final Manifest clone = new Manifest(Manifest.FORMAT_VERSION, 1, cloneId, size, clusterSize, false, null,
                records, null);
            clone.write(target, io);
            return clone;
        } finally {
            operation.unlock();
        }
    }

    /** A read-only view of snapshot {@code name}, for its own export; close it when the export goes. */
    public BlockDevice snapshotView(final String name) throws IOException {
        final long stamp = gate.readLock();
        try {
            final Manifest m = requireManifest(name);
            final Manifest.LayerRecord snap = m.snapshot(name);
            if (snap == null) {
                throw noSuchSnapshot(name);
            }
            final List<Manifest.LayerRecord> records = m.chain(snap.id());
            final Layer[] chain = new Layer[records.size()];
            for (int i = 0; i < chain.length; i++) {
                chain[i] = layers.get(records.get(i).id()).retain();
            }
            final Chain view = chain.length == 1 && chain[0].isBase() ? new Chain(chain, null, size, clusterSize)
                : new Chain(chain, Chain.owners(chain, size, clusterSize), size, clusterSize);
            final List<String> names = new ArrayList<>();
            for (final Manifest.LayerRecord r : records) {
                names.add(r.snapshot());
            }
            return new SnapshotView(name, view, names);
        } finally {
            gate.unlockRead(stamp);
        }
    }

    // ------------------------------------------------------------------------------------------------ mirroring

    /**
     * Keeps the chain as it is until {@link #releaseChain()}: snapshot create, rollback and delete are refused with
     * a message naming {@code why}. Waits for a snapshot operation in progress (up to 10 s, like the others), and
     * refuses while a delete is still pending (its merge would change layers being copied).
     */
    public void holdChain(final String why) throws SnapshotException {
        acquireOperation();
        try {
            final Manifest m = manifest;
            if (m != null && m.pending() != null) {
                throw new SnapshotException(SnapshotException.Code.REFUSED, "a snapshot delete is still being finished"
                    + " on " + dir.getFileName() + "; wait until it is done (GET /v1/operations), then retry");
            }
            if (chainHeld != null) {
                throw new SnapshotException(SnapshotException.Code.REFUSED, dir.getFileName() + " is " + chainHeld);
            }
            chainHeld = why;
        } finally {
            operation.unlock();
        }
    }

    /** Ends {@link #holdChain}. */
    public void releaseChain() {
        chainHeld = null;
    }

    private void checkChainNotHeld(final String what) throws SnapshotException {
        final String why = chainHeld;
        if (why != null) {
            throw new SnapshotException(SnapshotException.Code.REFUSED, "cannot " + what + " " + dir.getFileName()
                + " while it is " + why + ": the destination would not get the change; wait for the mirror to end,"
                + " or abort it (DELETE /v1/volumes/" + dir.getFileName() + "/mirror)");
        }
    }

    /**
     * Describes {@code [offset, offset + length)} as the layer of snapshot {@code snapshot} ({@code null}: the
     * active layer) holds it, for copying the layer alone: 0 where it holds data, {@link ExtentSink#ZERO} where it
     * marks clusters as zeros, {@link ExtentSink#HOLE} where it holds nothing and the layers below show through,
     * and {@code HOLE | ZERO} where it holds nothing and has nothing below (the bottom layer). The base file
     * holds what its file has allocated.
     *
     * @return the bytes described.
     */
    public long owned(final String snapshot, final long offset, final long length, final ExtentSink sink,
                      final int maxExtents) throws IOException {
        final long stamp = gate.readLock();
        try {
            final Manifest.LayerRecord record = recordOf(snapshot);
            final Layer layer = layerOf(record);
            if (layer.isBase()) {
                return layer.data().allocation(offset, length, (len, flags) -> sink.extent(len,
                    (flags & ExtentSink.HOLE) != 0 ? ExtentSink.HOLE | ExtentSink.ZERO : flags), maxExtents);
            }
            final int none = record.parent() == null ? ExtentSink.HOLE | ExtentSink.ZERO : ExtentSink.HOLE;
            final Chain.Coalescer out = new Chain.Coalescer(sink, maxExtents);
            final long end = Math.min(offset + length, size);
            long pos = offset;
            while (pos < end && !out.stopped()) {
                final long cluster = pos / clusterSize;
                final long next = Math.min(end, (cluster + 1) * clusterSize);
                final int state = layer.map().state(cluster);
                out.extent(next - pos, state == ClusterMap.DATA ? 0 : state == ClusterMap.ZERO ? ExtentSink.ZERO
                    : none);
                pos = next;
            }
            return out.finish();
        } finally {
            gate.unlockRead(stamp);
        }
    }

    /**
     * The clusters the layer of snapshot {@code snapshot} ({@code null}: the active layer) holds as data and as
     * zeros, or {@code null} for the base file, which has no cluster map.
     */
    public long[] heldClusters(final String snapshot) throws IOException {
        final Layer layer = layerOf(recordOf(snapshot));
        return layer.isBase() ? null : new long[] {layer.map().count(ClusterMap.DATA),
            layer.map().count(ClusterMap.ZERO)};
    }

    // ------------------------------------------------------------------------------------------------ helpers

    /** The record of snapshot {@code snapshot}, or of the active layer for {@code null} (none without snapshots). */
    private Manifest.LayerRecord recordOf(final String snapshot) throws SnapshotException {
        if (snapshot == null) {
            final Manifest m = manifest;
            return m == null ? null : m.active();
        }
        final Manifest.LayerRecord record = requireManifest(snapshot).snapshot(snapshot);
        if (record == null) {
            throw noSuchSnapshot(snapshot);
        }
        return record;
    }

    /** The open layer of {@code record}; the top of the live chain for {@code null}. */
    private Layer layerOf(final Manifest.LayerRecord record) {
        return record == null ? live.layers[live.top] : layers.get(record.id());
    }

    private Manifest requireManifest(final String name) throws SnapshotException {
        final Manifest m = manifest;
        if (m == null) {
            throw noSuchSnapshot(name);
        }
        return m;
    }

    private SnapshotException noSuchSnapshot(final String name) {
        return new SnapshotException(SnapshotException.Code.NOT_FOUND, "no snapshot '" + name + "' in "
            + dir.getFileName() + "; list them with 'nbdtail snapshot list " + dir.getFileName() + "'");
    }

    private void checkWritable() throws StorageException {
        checkBroken();
        if (readOnly) {
            throw new StorageException(StorageException.Kind.NOT_SUPPORTED, "the volume is read-only");
        }
    }

    private void acquireOperation() throws SnapshotException {
        try {
            if (operation.tryLock(10, java.util.concurrent.TimeUnit.SECONDS)) {
                return;
            }
        } catch (final InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        throw new SnapshotException(SnapshotException.Code.REFUSED, "another snapshot operation (such as the merge"
            + " of a deleted snapshot) is running on " + dir.getFileName() + "; retry when it is done");
    }

    private void checkBroken() throws StorageException {
        final StorageException b = broken;
        if (b != null) {
            throw new StorageException(StorageException.Kind.VOLUME_FAILED, "the volume stopped taking writes after"
                + " a failed manifest update (" + b.getMessage() + "); restart the server and run nbdtail check", b);
        }
    }

    private boolean shared(final UUID id) throws IOException {
        return (Integer) Files.getAttribute(dataPath(dir, id), "unix:nlink") > 1
            || (Integer) Files.getAttribute(mapPath(dir, id), "unix:nlink") > 1;
    }

    private Layer createLayer(final UUID id) throws IOException {
        if (!Files.isDirectory(dir.resolve(LAYERS))) {
            // The name "layers" must be durable before a manifest names a layer in it: a directory sync covers
            // only the names in that directory, and nothing orders the mkdir before the later manifest rename.
            io.createDirectories(dir.resolve(LAYERS));
            io.syncDirectory(dir);
        }
        final Path data = dataPath(dir, id);
        createSparse(data);
        final ClusterMap map = ClusterMap.create(mapPath(dir, id), id, size, clusterSize, io);
        try {
            io.syncDirectory(dir.resolve(LAYERS));
            FaultPoints.reach("layer.created");
            return new Layer(id, FileBlockDevice.open(data, false, io), map, data);
        } catch (final IOException | RuntimeException e) {
            map.close();
            io.deleteIfExists(data);
            io.deleteIfExists(mapPath(dir, id));
            throw e;
        }
    }

    private void createSparse(final Path data) throws IOException {
        io.open(data, java.util.Set.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE), OWNER_ONLY).close();
        io.setLength(data, size); // ftruncate: a hole of the full size
    }

    /**
     * Drops a layer made for a chain change that did not commit. After a failed manifest write the disc may hold
     * either manifest, and the new one names this layer: then its files stay (check reports them if unused).
     */
    private void abandon(final Layer fresh) {
        if (broken == null) {
            discardLayer(fresh);
        } else {
            fresh.release();
        }
    }

    private void discardLayer(final Layer layer) {
        layer.release();
        deleteFiles(layer);
    }

    private void retire(final UUID id) {
        final Layer layer;
        final long stamp = gate.writeLock();
        try {
            layer = layers.remove(id);
        } finally {
            gate.unlockWrite(stamp);
        }
        if (layer != null) {
            layer.release();
            deleteFiles(layer);
        }
    }

    private void deleteFiles(final Layer layer) {
        try {
            io.deleteIfExists(layer.dataPath());
            if (!layer.isBase()) {
                io.deleteIfExists(layer.map().path());
            }
        } catch (final IOException e) {
            LOG.warn("{}: cannot delete the files of layer {}: {}; 'nbdtail check --repair' removes them later",
                dir.getFileName(), layer.id(), e.toString());
        }
    }

    /**
     * Writes a new manifest. If the rename may have happened but its durability is unknown, the in-memory state
     * cannot be trusted to match the disc: the error propagates and the caller fails the volume.
     */
    private void commit(final Manifest next) throws IOException {
        try {
            next.write(dir, io);
        } catch (final IOException e) {
            broken = StorageException.of("writing the manifest of " + dir, e);
            LOG.error("{}: writing the manifest failed ({}); the volume stops taking writes until it is restarted"
                + " and checked", dir.getFileName(), e.toString());
            throw broken;
        }
        manifest = next;
    }

    private ReentrantLock stripe(final long cluster) {
        return stripes[(int) (cluster ^ cluster >>> 17) & STRIPES - 1];
    }

    private ByteBuffer takeBuffer() {
        final ByteBuffer b = clusterBuffers.poll();
        return b != null ? b.clear() : ByteBuffer.allocateDirect(clusterSize);
    }

    private void giveBuffer(final ByteBuffer b) {
        clusterBuffers.offer(b);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        final long stamp = gate.writeLock();
        try {
            closeLayers();
        } finally {
            gate.unlockWrite(stamp);
        }
    }

    private void closeLayers() {
        for (final Layer layer : layers.values()) {
            layer.release();
        }
        layers.clear();
    }

    @Override
    public String toString() {
        return "LayeredDevice{" + dir.getFileName() + ", " + depth() + " layer(s)}";
    }
}
