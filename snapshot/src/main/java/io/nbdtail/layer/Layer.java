package io.nbdtail.layer;

import io.nbdtail.storage.BlockDevice;

import java.nio.file.Path;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One open layer: its data (a sparse file addressed by guest offset, or the base device) and, unless it is the
 * base, its {@link ClusterMap}. Reference counted: the volume holds one reference for as long as the manifest
 * lists the layer, and every snapshot view reading through it holds one more, so a deleted layer's descriptors
 * stay open (and its unlinked files readable) until the last reader is done.
 */
final class Layer {
    private final UUID id;
    private final BlockDevice data;
    private final ClusterMap map;
    private final Path dataPath;
    private final AtomicInteger references = new AtomicInteger(1);

    Layer(final UUID id, final BlockDevice data, final ClusterMap map, final Path dataPath) {
        this.id = id;
        this.data = data;
        this.map = map;
        this.dataPath = dataPath;
    }

    UUID id() {
        return id;
    }

    BlockDevice data() {
        return data;
    }

    /** The cluster map, or {@code null} for the base layer, which holds every cluster no layer above holds. */
    ClusterMap map() {
        return map;
    }

    boolean isBase() {
        return map == null;
    }

    Path dataPath() {
        return dataPath;
    }

    Layer retain() {
        if (references.getAndIncrement() <= 0) {
            references.getAndDecrement();
            throw new IllegalStateException("layer " + id + " is already closed");
        }
        return this;
    }

    void release() {
        if (references.decrementAndGet() == 0) {
            data.close();
            if (map != null) {
                map.close();
            }
        }
    }

    @Override
    public String toString() {
        return "Layer{" + id + (map == null ? ", base" : "") + '}';
    }
}
