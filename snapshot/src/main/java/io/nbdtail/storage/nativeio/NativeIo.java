package io.nbdtail.storage.nativeio;

/**
 * The few Linux system calls the JDK does not offer: file locks that conflict within one process, hole
 * punching, {@code SEEK_DATA}/{@code SEEK_HOLE}, read-ahead hints, the size of a block device and the family
 * of an inherited socket.
 *
 * <p>Everything native goes through this interface so that the backend (JNR-FFI today, the FFM API tomorrow)
 * can be swapped and so that tests can inject faults. File descriptors are plain {@code int}s owned by the
 * caller: whoever {@link #open opens} one closes it.
 *
 * <p>Every method reports failure by throwing {@link NativeIoException} carrying the {@code errno}; none
 * returns an error code.
 */
public interface NativeIo {
    /** {@code open(2)} flags used by nbdtail (Linux x86_64 and aarch64 values). */
    int O_RDONLY = 0;
    int O_RDWR = 2;
    int O_EXCL = 0x80;
    int O_CLOEXEC = 0x80000;

    /** {@code fallocate(2)} modes. */
    int FALLOC_FL_KEEP_SIZE = 0x01;
    int FALLOC_FL_PUNCH_HOLE = 0x02;
    int FALLOC_FL_ZERO_RANGE = 0x10;

    /** {@code posix_fadvise(2)} advice values. */
    int POSIX_FADV_SEQUENTIAL = 2;
    int POSIX_FADV_WILLNEED = 3;

    /** Socket families as returned by {@link #socketFamily}. */
    int AF_UNIX = 1;
    int AF_INET = 2;
    int AF_INET6 = 10;

    /** errno values the callers test for. */
    int EPERM = 1;
    int ENOENT = 2;
    int EINTR = 4;
    int EIO = 5;
    int ENXIO = 6;
    int EBADF = 9;
    int EAGAIN = 11;
    int EWOULDBLOCK = EAGAIN;
    int EBUSY = 16;
    int ENODEV = 19;
    int EINVAL = 22;
    int ENOTTY = 25;
    int EFBIG = 27;
    int ENOSPC = 28;
    int ESPIPE = 29;
    int EDQUOT = 122;
    int EOPNOTSUPP = 95;
    int ENOTSUP = EOPNOTSUPP;

    /**
     * {@code open(path, flags | O_CLOEXEC)}.
     *
     * @return the new file descriptor.
     */
    int open(String path, int flags) throws NativeIoException;

    /** {@code close(fd)}; errors are reported but the descriptor is gone either way. */
    void close(int fd) throws NativeIoException;

    /**
     * {@code flock(fd, LOCK_EX | LOCK_NB)}. flock locks belong to the open file description, so a second
     * {@code open} of the same file conflicts even inside this process, and the kernel drops the lock when
     * the process dies (a stale lock cannot outlive a crash).
     *
     * @return {@code true} if the lock was taken, {@code false} if another description holds it.
     */
    boolean tryLockExclusive(int fd) throws NativeIoException;

    /** {@code fallocate(fd, mode, offset, length)}; {@code errno} EOPNOTSUPP when the file system cannot. */
    void fallocate(int fd, int mode, long offset, long length) throws NativeIoException;

    /**
     * {@code lseek(fd, offset, SEEK_DATA)}.
     *
     * @return the offset of the next byte of data at or after {@code offset}, or {@code -1} if there is no
     *         data from {@code offset} to the end of the file (the kernel's ENXIO).
     */
    long seekData(int fd, long offset) throws NativeIoException;

    /**
     * {@code lseek(fd, offset, SEEK_HOLE)}.
     *
     * @return the offset of the next hole at or after {@code offset}; the end of the file counts as a hole.
     *         {@code -1} if {@code offset} is at or beyond the end of the file (ENXIO).
     */
    long seekHole(int fd, long offset) throws NativeIoException;

    /** {@code posix_fadvise(fd, offset, length, advice)}; a hint, so callers may ignore failures. */
    void fadvise(int fd, long offset, long length, int advice) throws NativeIoException;

    /** {@code ioctl(fd, BLKGETSIZE64)}: the size in bytes of the block device open on {@code fd}. */
    long blockDeviceSize(int fd) throws NativeIoException;

    /** {@code ioctl(fd, BLKDISCARD, {offset, length})} on a block device. */
    void blockDiscard(int fd, long offset, long length) throws NativeIoException;

    /** {@code ioctl(fd, BLKZEROOUT, {offset, length})} on a block device. */
    void blockZeroOut(int fd, long offset, long length) throws NativeIoException;

    /**
     * {@code pread(fd, address, length, offset)} into native memory at {@code address}.
     *
     * @return bytes read; 0 at end of file. Interrupted calls are retried.
     */
    int pread(int fd, long address, int length, long offset) throws NativeIoException;

    /**
     * {@code pwrite(fd, address, length, offset)} from native memory at {@code address}.
     *
     * @return bytes written (possibly fewer than asked). Interrupted calls are retried.
     */
    int pwrite(int fd, long address, int length, long offset) throws NativeIoException;

    /** {@code fdatasync(fd)}. */
    void fdatasync(int fd) throws NativeIoException;

    /** {@code getsockopt(fd, SOL_SOCKET, SO_DOMAIN)}: {@link #AF_UNIX}, {@link #AF_INET} or {@link #AF_INET6}. */
    int socketFamily(int fd) throws NativeIoException;

    /** {@code true} if {@code fd} is a block device ({@code fstat} and {@code S_ISBLK}). */
    boolean isBlockDevice(int fd) throws NativeIoException;

    /** The shared implementation for this platform. */
    static NativeIo get() {
        return JnrNativeIo.INSTANCE;
    }
}
