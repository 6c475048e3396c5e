package io.nbdtail.layer;

import com.fasterxml.jackson.annotation.JsonInclude;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.nbdtail.storage.FaultPoints;
import io.nbdtail.storage.StorageIo;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.UUID;
import java.util.zip.CRC32C;

/**
 * The layer tree of one volume, stored as the file {@code manifest} in the volume's directory and replaced
 * atomically: a temporary file, {@code fdatasync}, {@code rename}, {@code fsync} of the directory. After a crash
 * either the old or the new manifest is there, never a mix.
 *
 * <p>A volume without a manifest is a plain volume: one base layer, active. The first snapshot writes the first
 * manifest.
 *
 * <p>File layout (little-endian): 8 bytes magic {@code NBDTMANI}, u32 format version, u32 body length, u32
 * CRC32C of the body, u32 reserved (0), then the body: UTF-8 JSON of this record.
 *
 * @param generation   incremented by every change; a manifest with a lower generation is older.
 * @param volumeId     the volume's identity (the id in {@code volume.json}).
 * @param size         the volume size in bytes; every layer has this size.
 * @param clusterSize  the copy-on-write granularity in bytes.
 * @param needsCheck   set when the server found something it could not trust; the volume is not served until
 *                     {@code nbdtail check} ran.
 * @param checkReason  why {@code needsCheck} was set, or {@code null}.
 * @param layers       every layer of the volume, parents before children.
 * @param pending      a multi-step operation that a crash interrupted and that opening the volume finishes, or
 *                     {@code null}.
 */
@JsonInclude(JsonInclude.Include.ALWAYS)
public record Manifest(int formatVersion, long generation, UUID volumeId, long size, int clusterSize,
                       boolean needsCheck, String checkReason, List<LayerRecord> layers, Pending pending) {
    public static final int FORMAT_VERSION = 1;
    public static final String FILE = "manifest";
    static final byte[] MAGIC = "NBDTMANI".getBytes(StandardCharsets.US_ASCII);
    static final int HEADER = 24;
    /** No manifest body is anywhere near this; a larger length field means a damaged header. */
    static final int MAX_BODY = 1 << 20;

    private static final ObjectMapper JSON = new ObjectMapper()
        .enable(SerializationFeature.INDENT_OUTPUT)
        .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
        .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES);

    /**
     * One layer.
     *
     * @param id       the layer's identity; its files are {@code layers/ID.data} and {@code layers/ID.map}.
     * @param parent   the layer below, or {@code null} for a bottom layer.
     * @param snapshot the snapshot name for a frozen layer; {@code null} for the active layer.
     * @param created  when the layer was frozen (snapshot time) or created (active layer), ISO-8601.
     * @param base     {@code true} for the volume's original data ({@code data.raw} or the block device): it has
     *                 no map and holds every cluster no layer above it holds.
     */
    public record LayerRecord(UUID id, UUID parent, String snapshot, String created, boolean base) {
        public LayerRecord {
            Objects.requireNonNull(id, "id");
            Objects.requireNonNull(created, "created");
        }

        public boolean active() {
            return snapshot == null;
        }

        public LayerRecord withParent(final UUID newParent) {
            return new LayerRecord(id, newParent, snapshot, created, base);
        }
    }

    /**
     * An interrupted operation.
     *
     * @param operation {@code "delete"}: layer {@code layer} is being merged into its children.
     * @param layer     the layer concerned.
     */
    public record Pending(String operation, UUID layer) {
    }

    public Manifest {
        Objects.requireNonNull(volumeId, "volumeId");
        layers = List.copyOf(layers);
    }

    /** The active layer. */
    public LayerRecord active() {
        for (final LayerRecord l : layers) {
            if (l.active()) {
                return l;
            }
        }
        throw new IllegalStateException("manifest without an active layer");
    }

    public LayerRecord layer(final UUID id) {
        for (final LayerRecord l : layers) {
            if (l.id().equals(id)) {
                return l;
            }
        }
        return null;
    }

    public LayerRecord snapshot(final String name) {
        for (final LayerRecord l : layers) {
            if (name.equals(l.snapshot())) {
                return l;
            }
        }
        return null;
    }

    /** The layers from the bottom up to and including {@code top}. */
    public List<LayerRecord> chain(final UUID top) {
        final List<LayerRecord> chain = new ArrayList<>();
        for (LayerRecord l = layer(top); l != null; l = l.parent() == null ? null : layer(l.parent())) {
            chain.addFirst(l);
            if (chain.size() > layers.size()) {
                throw new IllegalStateException("the manifest's parent pointers form a cycle");
            }
        }
        return chain;
    }

    public List<LayerRecord> children(final UUID id) {
        final List<LayerRecord> children = new ArrayList<>();
        for (final LayerRecord l : layers) {
            if (id.equals(l.parent())) {
                children.add(l);
            }
        }
        return children;
    }

    public Manifest with(final List<LayerRecord> newLayers, final Pending newPending) {
        return new Manifest(formatVersion, generation + 1, volumeId, size, clusterSize, needsCheck, checkReason,
            newLayers, newPending);
    }

    public Manifest withNeedsCheck(final boolean flag, final String reason) {
        return new Manifest(formatVersion, generation + 1, volumeId, size, clusterSize, flag, flag ? reason : null,
            layers, pending);
    }

    /** Checks the invariants a loaded manifest must keep; a violation means a damaged or foreign file. */
    void validate() throws LayerCorruptException {
        if (formatVersion != FORMAT_VERSION) {
            throw new LayerCorruptException("format version " + formatVersion + " is not one this build reads ("
                + FORMAT_VERSION + ")");
        }
        if (clusterSize < 4096 || Integer.bitCount(clusterSize) != 1 || size <= 0) {
            throw new LayerCorruptException("cluster size " + clusterSize + " or size " + size + " is invalid");
        }
        int active = 0;
        final List<UUID> seen = new ArrayList<>();
        for (final LayerRecord l : layers) {
            if (seen.contains(l.id())) {
                throw new LayerCorruptException("layer " + l.id() + " is listed twice");
            }
            if (l.parent() != null && !seen.contains(l.parent())) {
                throw new LayerCorruptException("layer " + l.id() + " names parent " + l.parent()
                    + ", which is not listed before it");
            }
            if (l.base() && l.parent() != null) {
                throw new LayerCorruptException("the base layer " + l.id() + " has a parent");
            }
            seen.add(l.id());
            if (l.active()) {
                active++;
            } else if (layers.stream().filter(o -> l.snapshot().equals(o.snapshot())).count() > 1) {
                throw new LayerCorruptException("snapshot name " + l.snapshot() + " is used twice");
            }
        }
        if (active != 1) {
            throw new LayerCorruptException(active + " active layers; a volume has exactly one");
        }
        if (pending != null && (!"delete".equals(pending.operation()) || layer(pending.layer()) == null)) {
            throw new LayerCorruptException("pending operation " + pending + " is unknown or names no layer");
        }
    }

    // ------------------------------------------------------------------------------------------------ file

    /** Reads {@code dir/manifest}, or returns {@code null} if there is none (a plain volume). */
    public static Manifest read(final Path dir) throws IOException {
        final byte[] bytes;
        try {
            bytes = Files.readAllBytes(dir.resolve(FILE));
        } catch (final NoSuchFileException e) {
            return null;
        }
        return decode(bytes, dir.resolve(FILE).toString());
    }

    /** Parses a manifest file's bytes; public for the checker and the fuzzer. */
    public static Manifest decode(final byte[] bytes, final String where) throws LayerCorruptException {
        if (bytes.length < HEADER) {
            throw new LayerCorruptException(where + ": " + bytes.length + " bytes is too short for a manifest");
        }
        final ByteBuffer b = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        final byte[] magic = new byte[MAGIC.length];
        b.get(0, magic);
        if (!java.util.Arrays.equals(magic, MAGIC)) {
            throw new LayerCorruptException(where + ": no NBDTMANI magic");
        }
        final int version = b.getInt(8);
        final int length = b.getInt(12);
        if (version != FORMAT_VERSION) {
            throw new LayerCorruptException(where + ": format version " + version + " is not one this build reads ("
                + FORMAT_VERSION + ")");
        }
        if (length < 0 || length > MAX_BODY || HEADER + length != bytes.length) {
            throw new LayerCorruptException(where + ": body length " + length + " does not match the file's "
                + bytes.length + " bytes");
        }
        final CRC32C crc = new CRC32C();
        crc.update(bytes, HEADER, length);
        if ((int) crc.getValue() != b.getInt(16)) {
            throw new LayerCorruptException(where + ": the body checksum does not match");
        }
        final Manifest m;
        try {
            m = JSON.readValue(bytes, HEADER, length, Manifest.class);
        } catch (final IOException | RuntimeException e) {
            throw new LayerCorruptException(where + ": the body is not a valid manifest: " + e.getMessage(), e);
        }
        if (m == null || m.layers() == null) {
            throw new LayerCorruptException(where + ": the body is empty");
        }
        try {
            m.validate();
        } catch (final LayerCorruptException e) {
            throw new LayerCorruptException(where + ": " + e.getMessage(), e);
        }
        return m;
    }

    public byte[] encode() throws IOException {
        final byte[] body = JSON.writeValueAsBytes(this);
        final ByteBuffer b = ByteBuffer.allocate(HEADER + body.length).order(ByteOrder.LITTLE_ENDIAN);
        b.put(MAGIC);
        b.putInt(FORMAT_VERSION);
        b.putInt(body.length);
        final CRC32C crc = new CRC32C();
        crc.update(body);
        b.putInt((int) crc.getValue());
        b.putInt(0);
        b.put(body);
        return b.array();
    }

    /** Replaces {@code dir/manifest} with this one atomically and durably. */
    public void write(final Path dir) throws IOException {
        write(dir, StorageIo.get());
    }

    /** {@link #write(Path)} through {@code io}. */
    public void write(final Path dir, final StorageIo io) throws IOException {
        final Path temp = dir.resolve(FILE + ".tmp");
        try (FileChannel channel = io.open(temp, java.util.Set.of(StandardOpenOption.CREATE, StandardOpenOption.WRITE,
            StandardOpenOption.TRUNCATE_EXISTING))) {
            ClusterMap.writeFully(channel, ByteBuffer.wrap(encode()), 0);
            channel.force(true);
        }
        FaultPoints.reach("manifest.temp-written");
        io.move(temp, dir.resolve(FILE));
        FaultPoints.reach("manifest.renamed");
        io.syncDirectory(dir);
        FaultPoints.reach("manifest.dir-synced");
    }
}
