package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.storage.nativeio.NativeIoException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A {@link BlockDevice} on a sparse regular file or on a block device.
 *
 * <p>Data moves through a {@link FileChannel} (positional {@code pread}/{@code pwrite} on direct buffers, with
 * the JDK's handling of short transfers and interrupts). Hole punching, zeroing, {@code SEEK_DATA} and the
 * device size need calls the JDK lacks, so a second descriptor on the same file is opened through
 * {@link NativeIo}. Both descriptors share the inode and its page cache, and {@code fdatasync} on either
 * covers both.
 *
 * <p>A block device is opened with {@code O_EXCL}, which Linux turns into an exclusive claim: it fails while
 * the device is mounted or claimed by another process.
 */
public final class FileBlockDevice implements BlockDevice {
    /** Zeros written by the slow path of {@link #writeZeroes} when the file system cannot zero a range. */
    private static final int ZERO_CHUNK = 1 << 20;

    private final Path path;
    private final FileChannel channel;
    private final StorageIo io;
    private final NativeIo nativeIo;
    private final int fd;
    private final boolean blockDevice;
    private final boolean readOnly;
    private volatile long size;
    private final AtomicBoolean closed = new AtomicBoolean();
    private volatile boolean seekDataWorks = true;
    /**
     * {@code true} while the file is known to have no holes: {@code SEEK_HOLE} from 0 found none when it was
     * opened, and nothing has punched, zeroed or grown it since (writes never make holes). {@link #allocation}
     * then answers "all data" without the two {@code lseek}s per call, which every READ otherwise pays. Once
     * {@code false} it stays so: the lookups are always correct, this is only a shortcut.
     */
    private volatile boolean holeFree;

    private FileBlockDevice(final Path path, final FileChannel channel, final StorageIo io, final int fd,
                            final boolean blockDevice, final boolean readOnly, final long size) {
        this.path = path;
        this.channel = channel;
        this.io = io;
        this.nativeIo = io.nativeIo();
        this.fd = fd;
        this.blockDevice = blockDevice;
        this.readOnly = readOnly;
        this.size = size;
        this.holeFree = !blockDevice && probeHoleFree(nativeIo, fd, size);
    }

    /** {@code true} if {@code SEEK_HOLE} from 0 finds only the implicit hole at the end of the file. */
    private static boolean probeHoleFree(final NativeIo nativeIo, final int fd, final long size) {
        if (size == 0) {
            return false;
        }
        try {
            final long hole = nativeIo.seekHole(fd, 0);
            return hole < 0 || hole >= size;
        } catch (final NativeIoException | RuntimeException e) {
            // No SEEK_HOLE here: allocation() finds that out for itself and reports everything as data.
            return false;
        }
    }

    /**
     * Opens a file or block device.
     *
     * @param readOnly open for reading only.
     */
    public static FileBlockDevice open(final Path path, final boolean readOnly, final NativeIo nativeIo)
        throws IOException {
        return open(path, readOnly, StorageIo.of(nativeIo));
    }

    /** Opens a file or block device through {@code io} (which the power-cut tests record). */
    public static FileBlockDevice open(final Path path, final boolean readOnly, final StorageIo io)
        throws IOException {
        final NativeIo nativeIo = io.nativeIo();
        final int probe = nativeIo.open(path.toString(), NativeIo.O_RDONLY);
        final boolean isBlock;
        try {
            isBlock = nativeIo.isBlockDevice(probe);
        } finally {
            nativeIo.close(probe);
        }
        final int flags = (readOnly ? NativeIo.O_RDONLY : NativeIo.O_RDWR) | (isBlock ? NativeIo.O_EXCL : 0);
        final int fd;
        try {
            fd = nativeIo.open(path.toString(), flags);
        } catch (final NativeIoException e) {
            if (isBlock && e.errno() == NativeIo.EBUSY) {
                throw new StorageException(StorageException.Kind.IO_ERROR, "block device " + path
                    + " is busy: it is mounted, part of an array, or claimed by another process", e);
            }
            throw e;
        }
        FileChannel channel = null;
        try {
            channel = io.open(path, readOnly ? Set.of(StandardOpenOption.READ)
                : Set.of(StandardOpenOption.READ, StandardOpenOption.WRITE));
            final long size = isBlock ? nativeIo.blockDeviceSize(fd) : channel.size();
            return new FileBlockDevice(path, channel, io, fd, isBlock, readOnly, size);
        } catch (final IOException | RuntimeException e) {
            if (channel != null) {
                channel.close();
            }
            nativeIo.close(fd);
            throw e;
        }
    }

    public Path path() {
        return path;
    }

    /** The native descriptor, for callers that need a syscall of their own (locks). */
    public int fd() {
        return fd;
    }

    @Override
    public long size() {
        return size;
    }

    @Override
    public boolean isBlockDevice() {
        return blockDevice;
    }

    @Override
    public void read(final ByteBuffer dst, final long offset) throws StorageException {
        long position = offset;
        try {
            while (dst.hasRemaining()) {
                final int n = channel.read(dst, position);
                if (n < 0) {
                    // Past the end of a file that is shorter than the volume: those bytes read as zeros.
                    while (dst.hasRemaining()) {
                        dst.put((byte) 0);
                    }
                    return;
                }
                position += n;
            }
        } catch (final IOException e) {
            throw StorageException.of("read at offset=" + position + " in " + path, e);
        }
    }

    @Override
    public void write(final ByteBuffer src, final long offset) throws StorageException {
        long position = offset;
        try {
            while (src.hasRemaining()) {
                position += channel.write(src, position);
            }
        } catch (final IOException e) {
            throw StorageException.of("write at offset=" + position + " in " + path, e);
        }
    }

    @Override
    public void read(final long address, final int length, final long offset) throws StorageException {
        int done = 0;
        try {
            while (done < length) {
                final int n = nativeIo.pread(fd, address + done, length - done, offset + done);
                if (n == 0) {
                    // Past the end of a file shorter than the volume: those bytes read as zeros.
                    java.lang.foreign.MemorySegment.ofAddress(address + done).reinterpret(length - done)
                        .fill((byte) 0);
                    return;
                }
                done += n;
            }
        } catch (final NativeIoException e) {
            throw StorageException.of("read at offset=" + (offset + done) + " in " + path, e);
        }
    }

    @Override
    public void write(final long address, final int length, final long offset) throws StorageException {
        int done = 0;
        try {
            while (done < length) {
                done += nativeIo.pwrite(fd, address + done, length - done, offset + done);
            }
        } catch (final NativeIoException e) {
            throw StorageException.of("write at offset=" + (offset + done) + " in " + path, e);
        }
    }

    @Override
    public void writeZeroes(final long offset, final long length, final boolean mayUnmap, final boolean fastOnly)
        throws StorageException {
        if (length == 0) {
            return;
        }
        // Before the call, so that no allocation() can see the new hole and still take the shortcut.
        holeFree = false;
        // On a regular file PUNCH_HOLE and ZERO_RANGE are metadata operations. On a block device the kernel
        // issues PUNCH_HOLE without a fallback (it fails unless the device offloads zeroing) and ZERO_RANGE
        // with one (it may write zeros), which is exactly the fast/slow distinction FAST_ZERO asks about.
        final int mode = mayUnmap ? NativeIo.FALLOC_FL_PUNCH_HOLE | NativeIo.FALLOC_FL_KEEP_SIZE
            : NativeIo.FALLOC_FL_ZERO_RANGE | NativeIo.FALLOC_FL_KEEP_SIZE;
        if (!(blockDevice && fastOnly && !mayUnmap)) {
            try {
                nativeIo.fallocate(fd, mode, offset, length);
                return;
            } catch (final NativeIoException e) {
                if (e.errno() != NativeIo.EOPNOTSUPP && e.errno() != NativeIo.EINVAL) {
                    throw StorageException.of("zero offset=" + offset + " length=" + length + " in " + path, e);
                }
            }
        }
        if (fastOnly) {
            throw new StorageException(StorageException.Kind.NOT_SUPPORTED, "cannot zero " + path + " faster than"
                + " writing zeros");
        }
        if (mayUnmap) {
            try {
                nativeIo.fallocate(fd, NativeIo.FALLOC_FL_ZERO_RANGE | NativeIo.FALLOC_FL_KEEP_SIZE, offset, length);
                return;
            } catch (final NativeIoException e) {
                if (e.errno() != NativeIo.EOPNOTSUPP && e.errno() != NativeIo.EINVAL) {
                    throw StorageException.of("zero offset=" + offset + " length=" + length + " in " + path, e);
                }
            }
        }
        writeZeroBuffers(offset, length);
    }

    private void writeZeroBuffers(final long offset, final long length) throws StorageException {
        final ByteBuffer zeros = ByteBuffer.allocateDirect((int) Math.min(ZERO_CHUNK, length));
        long done = 0;
        while (done < length) {
            zeros.clear().limit((int) Math.min(zeros.capacity(), length - done));
            write(zeros, offset + done);
            done += zeros.limit();
        }
    }

    @Override
    public void discard(final long offset, final long length) throws StorageException {
        if (length == 0) {
            return;
        }
        holeFree = false;
        try {
            if (blockDevice) {
                nativeIo.blockDiscard(fd, offset, length);
            } else {
                nativeIo.fallocate(fd, NativeIo.FALLOC_FL_PUNCH_HOLE | NativeIo.FALLOC_FL_KEEP_SIZE, offset, length);
            }
        } catch (final NativeIoException e) {
            // TRIM is advisory: a device that cannot discard simply keeps the data.
            if (e.errno() != NativeIo.EOPNOTSUPP && e.errno() != NativeIo.EINVAL) {
                throw StorageException.of("discard offset=" + offset + " length=" + length + " in " + path, e);
            }
        }
    }

    @Override
    public long allocation(final long offset, final long length, final ExtentSink sink, final int maxExtents)
        throws StorageException {
        final long end = offset + length;
        if (blockDevice || !seekDataWorks || holeFree) {
            sink.extent(length, 0);
            return length;
        }
        long position = offset;
        int extents = 0;
        try {
            while (position < end && extents < maxExtents) {
                final long data = nativeIo.seekData(fd, position);
                if (data < 0 || data >= end) {
                    sink.extent(end - position, ExtentSink.HOLE | ExtentSink.ZERO);
                    return length;
                }
                if (data > position) {
                    sink.extent(data - position, ExtentSink.HOLE | ExtentSink.ZERO);
                    position = data;
                    if (++extents == maxExtents) {
                        break;
                    }
                }
                long hole = nativeIo.seekHole(fd, position);
                if (hole < 0 || hole > end) {
                    hole = end;
                }
                sink.extent(hole - position, 0);
                extents++;
                position = hole;
            }
        } catch (final NativeIoException e) {
            if (e.errno() == NativeIo.EINVAL || e.errno() == NativeIo.EOPNOTSUPP) {
                // A file system without SEEK_DATA: everything is data, which is always a correct answer.
                seekDataWorks = false;
                sink.extent(end - position, 0);
                return length;
            }
            throw StorageException.of("allocation offset=" + position + " in " + path, e);
        }
        return position - offset;
    }

    @Override
    public void prefetch(final long offset, final long length) {
        try {
            nativeIo.fadvise(fd, offset, length, NativeIo.POSIX_FADV_WILLNEED);
        } catch (final NativeIoException ignored) {
            // A hint; nothing to report.
        }
    }

    @Override
    public synchronized void grow(final long newSize) throws StorageException {
        if (blockDevice) {
            throw new StorageException(StorageException.Kind.NOT_SUPPORTED, path + " is a block device; grow the"
                + " logical volume itself");
        }
        if (newSize < size) {
            throw new StorageException(StorageException.Kind.NOT_SUPPORTED, "cannot shrink " + path + " from " + size
                + " to " + newSize + " bytes");
        }
        holeFree = false;
        try {
            // ftruncate upwards: the new range is a hole, so growing costs no space and reads as zeros.
            io.setLength(path, newSize);
        } catch (final IOException e) {
            throw StorageException.of("grow " + path + " to " + newSize, e);
        }
        size = newSize;
    }

    @Override
    public void sync() throws StorageException {
        if (readOnly) {
            return;
        }
        try {
            // The descriptor the data went through, so the sync covers exactly those writes; errno classifies
            // the failure without guessing from a message.
            nativeIo.fdatasync(fd);
        } catch (final NativeIoException e) {
            throw StorageException.of("fdatasync " + path, e);
        }
    }

    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            channel.close();
        } catch (final IOException ignored) {
            // Nothing is lost: callers sync before closing.
        }
        try {
            nativeIo.close(fd);
        } catch (final NativeIoException ignored) {
            // Descriptor is gone either way.
        }
    }

    @Override
    public String toString() {
        return (blockDevice ? "block device " : "file ") + path;
    }
}
