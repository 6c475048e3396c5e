package io.nbdtail.layer;

import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.StorageException;

import java.util.List;

/**
 * A {@link BlockDevice} made of layers, which can say more about its allocation than a file can: which layer
 * holds each range ({@code qemu:allocation-depth}) and what changed since a snapshot
 * ({@code qemu:dirty-bitmap:SNAPSHOT}).
 */
public interface LayeredBlockDevice extends BlockDevice {
    /**
     * Describes {@code [offset, offset + length)} as extents whose flags are depths: 0 where no layer holds the
     * range, 1 for the top layer of this device's chain, 2 for the one below, and so on.
     */
    long depth(long offset, long length, ExtentSink sink, int maxExtents) throws StorageException;

    /** The snapshots below this device's top layer: the names {@code qemu:dirty-bitmap:} offers. */
    List<String> dirtyBitmaps();

    /**
     * Describes {@code [offset, offset + length)} as extents flagged 1 where the contents changed since snapshot
     * {@code snapshot} was taken and 0 elsewhere.
     *
     * @return the bytes described, or -1 if the snapshot is no longer below this device's top layer.
     */
    long dirty(String snapshot, long offset, long length, ExtentSink sink, int maxExtents);
}
