package io.nbdtail.layer;

import io.nbdtail.storage.BlockDevice;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.StorageException;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A snapshot, read-only, for its own export ({@code volume@snapshot}). It holds references to the layers of its
 * chain, so it keeps reading correct data even if the snapshot or one below it is deleted meanwhile: a merge
 * only copies clusters into layers above with the same contents, and a deleted layer's descriptors stay open
 * until the view closes.
 */
final class SnapshotView implements LayeredBlockDevice {
    private final String name;
    private final Chain chain;
    /** The snapshot names of the chain's layers, by chain index ({@code null} for none). */
    private final java.util.List<String> names;
    private final AtomicBoolean closed = new AtomicBoolean();

    SnapshotView(final String name, final Chain chain, final java.util.List<String> names) {
        this.name = name;
        this.chain = chain;
        this.names = names;
    }

    @Override
    public java.util.List<String> dirtyBitmaps() {
        return names.subList(0, names.size() - 1);
    }

    @Override
    public long dirty(final String snapshot, final long offset, final long length, final ExtentSink sink,
                      final int maxExtents) {
        final int index = dirtyBitmaps().indexOf(snapshot);
        return index < 0 ? -1 : chain.dirty(index, offset, length, sink, maxExtents);
    }

    @Override
    public long depth(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        return chain.depth(offset, length, sink, maxExtents);
    }

    @Override
    public long size() {
        return chain.size;
    }

    @Override
    public boolean isBlockDevice() {
        return false;
    }

    @Override
    public void read(final ByteBuffer dst, final long offset) throws StorageException {
        final int n = dst.remaining();
        if (dst.isDirect()) {
            chain.read(MemorySegment.ofBuffer(dst).address(), n, offset);
            dst.position(dst.limit());
        } else {
            final ByteBuffer direct = ByteBuffer.allocateDirect(n);
            chain.read(MemorySegment.ofBuffer(direct).address(), n, offset);
            dst.put(direct);
        }
    }

    @Override
    public void read(final long address, final int length, final long offset) throws StorageException {
        chain.read(address, length, offset);
    }

    @Override
    public void write(final ByteBuffer src, final long offset) throws StorageException {
        throw readOnly();
    }

    @Override
    public void write(final long address, final int length, final long offset) throws StorageException {
        throw readOnly();
    }

    @Override
    public void writeZeroes(final long offset, final long length, final boolean mayUnmap, final boolean fastOnly)
        throws StorageException {
        throw readOnly();
    }

    @Override
    public void discard(final long offset, final long length) throws StorageException {
        throw readOnly();
    }

    private StorageException readOnly() {
        return new StorageException(StorageException.Kind.NOT_SUPPORTED, "snapshot " + name + " is read-only");
    }

    @Override
    public long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        return chain.allocation(offset, length, sink, maxExtents);
    }

    @Override
    public void prefetch(final long offset, final long length) {
    }

    @Override
    public void grow(final long newSize) throws StorageException {
        throw readOnly();
    }

    @Override
    public void sync() {
        // nothing to make durable: a snapshot's layers were synced when it was taken
    }

    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            for (final Layer layer : chain.layers) {
                layer.release();
            }
        }
    }

    @Override
    public String toString() {
        return "SnapshotView{" + name + '}';
    }
}
