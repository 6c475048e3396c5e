package io.nbdtail.storage.nativeio;

import jnr.ffi.LibraryLoader;
import jnr.ffi.Memory;
import jnr.ffi.Pointer;
import jnr.ffi.Runtime;
import jnr.ffi.annotations.Out;
import jnr.ffi.annotations.SaveError;
import jnr.ffi.annotations.Transient;
import jnr.ffi.byref.IntByReference;
import jnr.ffi.byref.LongLongByReference;
import jnr.ffi.types.intptr_t;
import jnr.ffi.types.off_t;
import jnr.ffi.types.size_t;
import jnr.ffi.types.ssize_t;

/**
 * {@link NativeIo} through JNR-FFI (libc).
 *
 * <p>JNR because it needs no compiled code of ours and is verified on JDK 17 and 25 here. Its weak point is its
 * native stub (jffi), whose newer releases do not resolve on our mirror; the FFM API of JDK 22+ can make the
 * same calls with no dependency, and this class is the only one that would change.
 */
final class JnrNativeIo implements NativeIo {
    static final JnrNativeIo INSTANCE = new JnrNativeIo();

    private static final int LOCK_EX = 2;
    private static final int LOCK_NB = 4;
    private static final int SEEK_DATA = 3;
    private static final int SEEK_HOLE = 4;
    private static final int SOL_SOCKET = 1;
    private static final int SO_DOMAIN = 39;
    private static final long BLKGETSIZE64 = 0x80081272L;
    private static final long BLKDISCARD = 0x1277L;
    private static final long BLKZEROOUT = 0x127fL;
    /** glibc's {@code struct stat} is 144 bytes on x86_64 (128 on aarch64); the buffer leaves headroom. */
    private static final int STAT_SIZE = 256;
    private static final boolean AARCH64 = "aarch64".equals(System.getProperty("os.arch"));
    /** {@code st_mode} (32 bits) follows dev, ino and nlink on x86_64 but only dev and ino on aarch64. */
    private static final int ST_MODE_OFFSET = AARCH64 ? 16 : 24;
    /** {@code _STAT_VER} for {@code __fxstat}, the only fstat entry point of glibc before 2.33. */
    private static final int STAT_VER = AARCH64 ? 0 : 1;
    private static final int S_IFMT = 0170000;
    private static final int S_IFBLK = 0060000;

    /** The libc functions we call; {@link SaveError} keeps errno for {@link Runtime#getLastError()}. */
    public interface LibC {
        @SaveError
        int open(String path, int flags);

        @SaveError
        int close(int fd);

        @SaveError
        int flock(int fd, int operation);

        @SaveError
        int fallocate(int fd, int mode, @off_t long offset, @off_t long length);

        @SaveError
        @off_t long lseek(int fd, @off_t long offset, int whence);

        /** Returns the error number itself rather than setting errno. */
        int posix_fadvise(int fd, @off_t long offset, @off_t long length, int advice);

        @SaveError
        int ioctl(int fd, long request, @Out LongLongByReference value);

        @SaveError
        int ioctl(int fd, long request, @Transient Pointer range);

        @SaveError
        int fdatasync(int fd);

        /** The buffer is raw native memory passed as an address: no marshalling, no copy, no allocation. */
        @SaveError
        @ssize_t long pread(int fd, @intptr_t long buffer, @size_t long count, @off_t long offset);

        @SaveError
        @ssize_t long pwrite(int fd, @intptr_t long buffer, @size_t long count, @off_t long offset);

        @SaveError
        int getsockopt(int fd, int level, int name, @Out IntByReference value, IntByReference length);

        /** A real symbol since glibc 2.33; older ones export only {@link #__fxstat}. */
        @SaveError
        int fstat(int fd, @Out @Transient Pointer stat);

        @SaveError
        int __fxstat(int version, int fd, @Out @Transient Pointer stat);

        String strerror(int errno);
    }

    private final LibC libc;
    private final Runtime runtime;
    private final boolean hasFstat;

    private JnrNativeIo() {
        libc = LibraryLoader.create(LibC.class).load("c");
        runtime = Runtime.getRuntime(libc);
        hasFstat = resolves(() -> libc.fstat(-1, Memory.allocateDirect(runtime, STAT_SIZE)));
    }

    /** JNR binds a missing symbol to a stub that throws {@link UnsatisfiedLinkError} when called. */
    private static boolean resolves(final Runnable call) {
        try {
            call.run();
            return true;
        } catch (final UnsatisfiedLinkError e) {
            return false;
        }
    }

    private NativeIoException error(final String call, final String detail) {
        final int errno = runtime.getLastError();
        return new NativeIoException(call, errno, detail + " (" + libc.strerror(errno) + ")");
    }

    @Override
    public int open(final String path, final int flags) throws NativeIoException {
        while (true) {
            final int fd = libc.open(path, flags | O_CLOEXEC);
            if (fd >= 0) {
                return fd;
            }
            if (runtime.getLastError() != EINTR) {
                throw error("open", "path=" + path + ", flags=0x" + Integer.toHexString(flags));
            }
        }
    }

    @Override
    public void close(final int fd) throws NativeIoException {
        if (libc.close(fd) != 0 && runtime.getLastError() != EINTR) {
            throw error("close", "fd=" + fd);
        }
    }

    @Override
    public boolean tryLockExclusive(final int fd) throws NativeIoException {
        while (true) {
            if (libc.flock(fd, LOCK_EX | LOCK_NB) == 0) {
                return true;
            }
            final int errno = runtime.getLastError();
            if (errno == EWOULDBLOCK) {
                return false;
            }
            if (errno != EINTR) {
                throw error("flock", "fd=" + fd);
            }
        }
    }

    @Override
    public void fallocate(final int fd, final int mode, final long offset, final long length)
        throws NativeIoException {
        while (libc.fallocate(fd, mode, offset, length) != 0) {
            if (runtime.getLastError() != EINTR) {
                throw error("fallocate", "fd=" + fd + ", mode=0x" + Integer.toHexString(mode) + ", offset=" + offset
                    + ", length=" + length);
            }
        }
    }

    @Override
    public long seekData(final int fd, final long offset) throws NativeIoException {
        return seek(fd, offset, SEEK_DATA, "lseek(SEEK_DATA)");
    }

    @Override
    public long seekHole(final int fd, final long offset) throws NativeIoException {
        return seek(fd, offset, SEEK_HOLE, "lseek(SEEK_HOLE)");
    }

    private long seek(final int fd, final long offset, final int whence, final String call)
        throws NativeIoException {
        final long result = libc.lseek(fd, offset, whence);
        if (result >= 0) {
            return result;
        }
        if (runtime.getLastError() == ENXIO) {
            return -1;
        }
        throw error(call, "fd=" + fd + ", offset=" + offset);
    }

    @Override
    public void fadvise(final int fd, final long offset, final long length, final int advice)
        throws NativeIoException {
        final int rc = libc.posix_fadvise(fd, offset, length, advice);
        if (rc != 0) {
            throw new NativeIoException("posix_fadvise", rc, "fd=" + fd + ", offset=" + offset + ", length=" + length
                + " (" + libc.strerror(rc) + ")");
        }
    }

    @Override
    public long blockDeviceSize(final int fd) throws NativeIoException {
        final LongLongByReference size = new LongLongByReference();
        if (libc.ioctl(fd, BLKGETSIZE64, size) != 0) {
            throw error("ioctl(BLKGETSIZE64)", "fd=" + fd);
        }
        return size.longValue();
    }

    @Override
    public void blockDiscard(final int fd, final long offset, final long length) throws NativeIoException {
        rangeIoctl(fd, BLKDISCARD, "ioctl(BLKDISCARD)", offset, length);
    }

    @Override
    public void blockZeroOut(final int fd, final long offset, final long length) throws NativeIoException {
        rangeIoctl(fd, BLKZEROOUT, "ioctl(BLKZEROOUT)", offset, length);
    }

    private void rangeIoctl(final int fd, final long request, final String call, final long offset,
                            final long length) throws NativeIoException {
        final Pointer range = Memory.allocateDirect(runtime, 16);
        range.putLong(0, offset);
        range.putLong(8, length);
        if (libc.ioctl(fd, request, range) != 0) {
            throw error(call, "fd=" + fd + ", offset=" + offset + ", length=" + length);
        }
    }

    @Override
    public int pread(final int fd, final long address, final int length, final long offset)
        throws NativeIoException {
        while (true) {
            final long n = libc.pread(fd, address, length, offset);
            if (n >= 0) {
                return (int) n;
            }
            if (runtime.getLastError() != EINTR) {
                throw error("pread", "fd=" + fd + ", length=" + length + ", offset=" + offset);
            }
        }
    }

    @Override
    public int pwrite(final int fd, final long address, final int length, final long offset)
        throws NativeIoException {
        while (true) {
            final long n = libc.pwrite(fd, address, length, offset);
            if (n >= 0) {
                return (int) n;
            }
            if (runtime.getLastError() != EINTR) {
                throw error("pwrite", "fd=" + fd + ", length=" + length + ", offset=" + offset);
            }
        }
    }

    @Override
    public void fdatasync(final int fd) throws NativeIoException {
        if (libc.fdatasync(fd) != 0) {
            throw error("fdatasync", "fd=" + fd);
        }
    }

    @Override
    public int socketFamily(final int fd) throws NativeIoException {
        final IntByReference value = new IntByReference();
        final IntByReference length = new IntByReference(4);
        if (libc.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, value, length) != 0) {
            throw error("getsockopt(SO_DOMAIN)", "fd=" + fd);
        }
        return value.intValue();
    }

    @Override
    public boolean isBlockDevice(final int fd) throws NativeIoException {
        final Pointer stat = Memory.allocateDirect(runtime, STAT_SIZE);
        final int rc = hasFstat ? libc.fstat(fd, stat) : libc.__fxstat(STAT_VER, fd, stat);
        if (rc != 0) {
            throw error("fstat", "fd=" + fd);
        }
        return (stat.getInt(ST_MODE_OFFSET) & S_IFMT) == S_IFBLK;
    }
}
