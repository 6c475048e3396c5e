package io.nbdtail.layer;

import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.StorageException;
import io.nbdtail.storage.nativeio.NativeIo;

import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;

/**
 * The offline consistency check of one volume's layers, modelled on {@code qemu-img check}: it reports
 * <em>corruption</em> (metadata that cannot be trusted: a damaged manifest or map, a missing layer file) and
 * <em>leaks</em> (space nothing refers to: files of layers no manifest lists, data in clusters a map does not
 * mark as held, after a crash between writing data and persisting the map). With {@code repair} it frees leaks;
 * it never changes a cluster that a map marks as held, so it cannot "repair" data away.
 *
 * <p>Run it with the volume closed (the caller holds the volume's lock).
 */
public final class Checker {
    private final Path dir;
    private final UUID volumeId;
    private final long size;
    private final Path basePath;
    private final NativeIo nativeIo;

    /** The findings. */
    public record Report(List<String> corruptions, List<String> leaks, long leakedBytes, List<String> repairs,
                         List<String> notes) {
        public boolean clean() {
            return corruptions.isEmpty() && leaks.isEmpty();
        }

        /** {@code qemu-img check}'s exit codes: 0 clean, 2 corruption, 3 leaks only. */
        public int exitCode() {
            return !corruptions.isEmpty() ? 2 : !leaks.isEmpty() ? 3 : 0;
        }
    }

    /**
     * @param basePath the volume's base data ({@code data.raw} or the device), or {@code null} if there is none.
     */
    public Checker(final Path dir, final UUID volumeId, final long size, final Path basePath,
                   final NativeIo nativeIo) {
        this.dir = dir;
        this.volumeId = volumeId;
        this.size = size;
        this.basePath = basePath;
        this.nativeIo = nativeIo;
    }

    public Report check(final boolean repair) throws IOException {
        final List<String> corruptions = new ArrayList<>();
        final List<String> leaks = new ArrayList<>();
        final List<String> repairs = new ArrayList<>();
        final List<String> notes = new ArrayList<>();
        long leaked = 0;
        Manifest manifest = null;
        boolean manifestCorrupt = false;
        try {
            manifest = Manifest.read(dir);
        } catch (final LayerCorruptException e) {
            corruptions.add(e.getMessage());
            manifestCorrupt = true;
        }
        final Set<String> expected = new HashSet<>();
        if (manifest != null) {
            if (!manifest.volumeId().equals(volumeId) || manifest.size() != size) {
                corruptions.add("the manifest belongs to volume " + manifest.volumeId() + " of " + manifest.size()
                    + " bytes, not to this volume (" + volumeId + ", " + size + " bytes)");
            }
            if (manifest.pending() != null) {
                notes.add("a delete of layer " + manifest.pending().layer() + " was interrupted; it finishes when the"
                    + " volume is next opened");
            }
            for (final Manifest.LayerRecord r : manifest.layers()) {
                final String what = r.snapshot() == null ? "the active layer" : "snapshot " + r.snapshot();
                if (r.base()) {
                    if (basePath == null || !Files.exists(basePath)) {
                        corruptions.add(what + " is the base data, which is missing");
                    }
                    continue;
                }
                expected.add(r.id() + ".data");
                expected.add(r.id() + ".map");
                final Path data = LayeredDevice.dataPath(dir, r.id());
                final Path mapPath = LayeredDevice.mapPath(dir, r.id());
                if (!Files.exists(data) || !Files.exists(mapPath)) {
                    corruptions.add(what + " (layer " + r.id() + ") is missing "
                        + (Files.exists(data) ? mapPath.getFileName() : data.getFileName()));
                    continue;
                }
                try (ClusterMap map = ClusterMap.open(mapPath, r.id(), size, manifest.clusterSize(), !repair);
                     FileBlockDevice device = FileBlockDevice.open(data, !repair, nativeIo)) {
                    if (device.size() != size) {
                        corruptions.add(what + ": its data file has " + device.size() + " bytes, not " + size);
                        continue;
                    }
                    final long bytes = leakedClusters(map, device, repair);
                    if (bytes > 0) {
                        leaked += bytes;
                        leaks.add(what + ": " + bytes + " bytes of data in clusters its map does not hold (a crash"
                            + " before a flush)");
                        if (repair) {
                            repairs.add("freed " + bytes + " leaked bytes of " + what);
                        }
                    }
                } catch (final LayerCorruptException e) {
                    corruptions.add(what + ": " + e.getMessage());
                }
            }
        }
        final Path layers = dir.resolve(LayeredDevice.LAYERS);
        if (Files.isDirectory(layers)) {
            try (DirectoryStream<Path> files = Files.newDirectoryStream(layers)) {
                for (final Path f : files) {
                    if (expected.contains(f.getFileName().toString())) {
                        continue;
                    }
                    long bytes = 0;
                    if (Files.isRegularFile(f)) {
                        try (FileBlockDevice orphan = FileBlockDevice.open(f, true, nativeIo)) {
                            bytes = LayeredDevice.allocated(orphan);
                        }
                    }
                    leaked += bytes;
                    leaks.add("file " + dir.relativize(f) + " (" + bytes + " bytes) belongs to no layer");
                    if (repair && !manifestCorrupt) { // with a damaged manifest, an unlisted file may be a layer
                        Files.delete(f);
                        repairs.add("deleted " + dir.relativize(f));
                    }
                }
            }
        }
        final Path temp = dir.resolve(Manifest.FILE + ".tmp");
        if (Files.exists(temp)) {
            leaks.add("file " + temp.getFileName() + " is a manifest that was never committed");
            if (repair) {
                Files.delete(temp);
                repairs.add("deleted " + temp.getFileName());
            }
        }
        if (manifest != null && manifest.needsCheck()) {
            if (corruptions.isEmpty()) {
                manifest.withNeedsCheck(false, null).write(dir);
                repairs.add("cleared the needs-check flag (" + manifest.checkReason() + ")");
            } else {
                notes.add("the needs-check flag stays set: " + manifest.checkReason());
            }
        }
        if (repair && corruptions.isEmpty()) {
            leaks.clear();
            leaked = 0;
        }
        return new Report(corruptions, leaks, leaked, repairs, notes);
    }

    /**
     * Bytes allocated in the layer's data file in clusters its map marks as {@link ClusterMap#NONE} or
     * {@link ClusterMap#ZERO}: never read, so freeing them changes nothing a client sees.
     */
    private long leakedClusters(final ClusterMap map, final FileBlockDevice device, final boolean repair)
        throws StorageException {
        final int cluster = map.clusterSize();
        long leaked = 0;
        long pos = 0;
        final List<long[]> data = new ArrayList<>();
        while (pos < size) {
            final long at = pos;
            final long[] walked = {0};
            device.allocation(at, size - at, (length, flags) -> {
                if ((flags & ExtentSink.HOLE) == 0) {
                    data.add(new long[] {at + walked[0], length});
                }
                walked[0] += length;
            }, 256);
            pos = at + Math.max(walked[0], 1);
        }
        for (final long[] extent : data) {
            for (long c = extent[0] / cluster; c * cluster < extent[0] + extent[1]; c++) {
                if (map.state(c) == ClusterMap.DATA) {
                    continue;
                }
                final long start = Math.max(c * cluster, extent[0]);
                final long end = Math.min(Math.min((c + 1) * cluster, size), extent[0] + extent[1]);
                leaked += end - start;
                if (repair) {
                    device.discard(start, end - start);
                }
            }
        }
        return leaked;
    }
}
