package io.nbdtail.storage.nativeio;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.ServerSocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** {@link JnrNativeIo} against real files, sockets and (as root) a loop device. */
class JnrNativeIoTest {
    private static final int KIB = 1024;
    private static final int MIB = 1024 * KIB;
    private static final byte FILL = (byte) 0xAB;

    private final NativeIo io = JnrNativeIo.INSTANCE;
    private final List<Integer> openFds = new ArrayList<>();

    @TempDir
    Path dir;

    @AfterEach
    void closeFds() throws NativeIoException {
        for (final int fd : openFds) {
            io.close(fd);
        }
    }

    private int open(final Path path, final int flags) throws NativeIoException {
        final int fd = io.open(path.toString(), flags);
        openFds.add(fd);
        return fd;
    }

    private void close(final int fd) throws NativeIoException {
        openFds.remove(Integer.valueOf(fd));
        io.close(fd);
    }

    private Path filledFile(final String name, final int size) throws IOException {
        final byte[] bytes = new byte[size];
        Arrays.fill(bytes, FILL);
        return Files.write(dir.resolve(name), bytes);
    }

    private static byte[] read(final Path path, final long offset, final int length) throws IOException {
        final ByteBuffer buffer = ByteBuffer.allocate(length);
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            while (buffer.hasRemaining() && channel.read(buffer, offset + buffer.position()) > 0) {
                // keep reading
            }
        }
        assertThat(buffer.position()).as("bytes read from %s at %d", path, offset).isEqualTo(length);
        return buffer.array();
    }

    /** Asserts {@code bytes[from, to)} are all {@code value}, naming the first offender. */
    private static void assertRange(final byte[] bytes, final int from, final int to, final byte value) {
        int bad = -1;
        for (int i = from; i < to && bad < 0; i++) {
            if (bytes[i] != value) {
                bad = i;
            }
        }
        assertThat(bad).as("first byte in [%d, %d) that is not 0x%02x", from, to, value & 0xFF).isEqualTo(-1);
    }

    @Test
    void shouldFailToOpenMissingFileWithEnoentAndPath() {
        final Path missing = dir.resolve("no-such-file");

        assertThatThrownBy(() -> io.open(missing.toString(), NativeIo.O_RDONLY))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(NativeIo.ENOENT))
            .hasMessageContaining("open")
            .hasMessageContaining(missing.toString())
            .hasMessageContaining("No such file or directory");
    }

    @Test
    void shouldLockExclusivelyAgainstASecondOpenInTheSameProcess() throws Exception {
        final Path file = filledFile("lock", 4096);
        final int first = open(file, NativeIo.O_RDWR);
        final int second = open(file, NativeIo.O_RDWR);

        assertThat(io.tryLockExclusive(first)).isTrue();
        assertThat(io.tryLockExclusive(second)).isFalse();

        close(first);
        assertThat(io.tryLockExclusive(second)).isTrue();
    }

    @Test
    void shouldPunchHoleThatReadsAsZerosAndIsSeenBySeekDataAndHole() throws Exception {
        final Path file = filledFile("punch", MIB);
        final int fd = open(file, NativeIo.O_RDWR);
        io.fdatasync(fd);
        final int holeStart = 256 * KIB;
        final int holeEnd = holeStart + 128 * KIB;

        io.fallocate(fd, NativeIo.FALLOC_FL_PUNCH_HOLE | NativeIo.FALLOC_FL_KEEP_SIZE, holeStart, holeEnd - holeStart);

        final byte[] bytes = read(file, 0, MIB);
        assertRange(bytes, 0, holeStart, FILL);
        assertRange(bytes, holeStart, holeEnd, (byte) 0);
        assertRange(bytes, holeEnd, MIB, FILL);
        assertThat(Files.size(file)).isEqualTo(MIB);

        assertThat(io.seekData(fd, 0)).isZero();
        assertThat(io.seekHole(fd, 0)).isEqualTo(holeStart);
        assertThat(io.seekHole(fd, holeStart + 4 * KIB)).isEqualTo(holeStart + 4 * KIB);
        assertThat(io.seekData(fd, holeStart)).isEqualTo(holeEnd);
        assertThat(io.seekHole(fd, holeEnd)).as("end of file counts as a hole").isEqualTo(MIB);
        assertThat(io.seekHole(fd, MIB)).as("SEEK_HOLE at end of file").isEqualTo(-1);
        assertThat(io.seekData(fd, MIB)).as("SEEK_DATA at end of file").isEqualTo(-1);
    }

    @Test
    void shouldFindNoDataInAFullySparseFile() throws Exception {
        final Path file = dir.resolve("sparse");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(MIB);
        }
        final int fd = open(file, NativeIo.O_RDONLY);

        assertThat(io.seekData(fd, 0)).isEqualTo(-1);
        assertThat(io.seekHole(fd, 0)).isZero();
    }

    /**
     * ZERO_RANGE keeps the blocks (ext4 turns them into unwritten extents), so the allocated block count does not
     * move. SEEK_HOLE is no witness here: ext4 and XFS report an unwritten extent with nothing in the page cache
     * as a hole, and as data once the zeros have been read into the cache.
     */
    @Test
    void shouldZeroRangeAndKeepItAllocated() throws Exception {
        final Path file = filledFile("zero", MIB);
        final int fd = open(file, NativeIo.O_RDWR);
        io.fdatasync(fd);
        final long blocksBefore = allocatedBlocks(file);
        final int start = 512 * KIB;
        final int end = start + 64 * KIB;

        io.fallocate(fd, NativeIo.FALLOC_FL_ZERO_RANGE, start, end - start);

        assertThat(allocatedBlocks(file)).as("512-byte blocks allocated").isEqualTo(blocksBefore);
        assertThat(io.seekHole(fd, 0)).as("first hole: the unwritten range or the end").isIn((long) start, (long) MIB);
        final byte[] bytes = read(file, 0, MIB);
        assertRange(bytes, 0, start, FILL);
        assertRange(bytes, start, end, (byte) 0);
        assertRange(bytes, end, MIB, FILL);
        assertThat(Files.size(file)).isEqualTo(MIB);
        assertThat(io.seekHole(fd, 0)).as("first hole once the zeros are cached").isEqualTo(MIB);

        io.fallocate(fd, NativeIo.FALLOC_FL_PUNCH_HOLE | NativeIo.FALLOC_FL_KEEP_SIZE, start, end - start);
        assertThat(allocatedBlocks(file)).as("after punching the same range").isLessThan(blocksBefore);
    }

    @Test
    void shouldKeepSizeWhenPunchingPastEndOfFile() throws Exception {
        final Path file = filledFile("keep", MIB);
        final int fd = open(file, NativeIo.O_RDWR);
        final int mode = NativeIo.FALLOC_FL_PUNCH_HOLE | NativeIo.FALLOC_FL_KEEP_SIZE;

        io.fallocate(fd, mode, 2L * MIB, MIB);
        assertThat(Files.size(file)).isEqualTo(MIB);

        io.fallocate(fd, mode, 768 * KIB, MIB);
        assertThat(Files.size(file)).isEqualTo(MIB);
        final byte[] bytes = read(file, 0, MIB);
        assertRange(bytes, 0, 768 * KIB, FILL);
        assertRange(bytes, 768 * KIB, MIB, (byte) 0);
    }

    @Test
    void shouldReportEopnotsuppForPunchHoleWithoutKeepSize() throws Exception {
        final int fd = open(filledFile("nokeep", 64 * KIB), NativeIo.O_RDWR);

        assertThatThrownBy(() -> io.fallocate(fd, NativeIo.FALLOC_FL_PUNCH_HOLE, 0, 4096))
            .isInstanceOfSatisfying(NativeIoException.class,
                e -> assertThat(e.errno()).isEqualTo(NativeIo.EOPNOTSUPP))
            .hasMessageContaining("fd=" + fd + ", mode=0x2, offset=0, length=4096");
    }

    @Test
    void shouldRejectBlockDeviceCallsOnARegularFile() throws Exception {
        final int fd = open(filledFile("regular", 64 * KIB), NativeIo.O_RDWR);

        assertThat(io.isBlockDevice(fd)).isFalse();
        assertThatThrownBy(() -> io.blockDeviceSize(fd))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(NativeIo.ENOTTY))
            .hasMessageContaining("BLKGETSIZE64")
            .hasMessageContaining("fd=" + fd);
    }

    @Test
    void shouldNotTakeACharacterDeviceForABlockDevice() throws Exception {
        final int fd = open(Path.of("/dev/null"), NativeIo.O_RDONLY);

        assertThat(io.isBlockDevice(fd)).isFalse();
    }

    @Test
    void shouldFailIsBlockDeviceOnBadFd() {
        assertThatThrownBy(() -> io.isBlockDevice(-1))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(NativeIo.EBADF));
    }

    @Test
    void shouldFdatasyncValidFdAndFailOnClosedOne() throws Exception {
        final int fd = open(filledFile("sync", 64 * KIB), NativeIo.O_RDWR);
        io.fdatasync(fd);
        close(fd);

        assertThatThrownBy(() -> io.fdatasync(fd))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(NativeIo.EBADF))
            .hasMessageContaining("fdatasync failed: fd=" + fd)
            .hasMessageContaining("Bad file descriptor");
        assertThatThrownBy(() -> io.fdatasync(-1))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(NativeIo.EBADF));
    }

    @Test
    void shouldPreadAndPwriteThroughNativeMemory() throws Exception {
        final Path file = filledFile("rw", 64 * KIB);
        final int fd = open(file, NativeIo.O_RDWR);
        final ByteBuffer out = ByteBuffer.allocateDirect(5).put("hello".getBytes(StandardCharsets.US_ASCII));
        final ByteBuffer in = ByteBuffer.allocateDirect(5);

        assertThat(io.pwrite(fd, address(out), 5, 4096)).isEqualTo(5);
        assertThat(io.pread(fd, address(in), 5, 4096)).isEqualTo(5);
        assertThat(io.pread(fd, address(in), 5, 64 * KIB)).as("at end of file").isZero();

        final byte[] back = new byte[5];
        in.get(back);
        assertThat(new String(back, StandardCharsets.US_ASCII)).isEqualTo("hello");
        assertThat(new String(read(file, 4096, 5), StandardCharsets.US_ASCII)).isEqualTo("hello");
    }

    @Test
    void shouldReportInetAndUnixSocketFamilies() throws Exception {
        final Path socketPath = dir.resolve("s.sock");
        try (ServerSocketChannel inet = ServerSocketChannel.open(StandardProtocolFamily.INET);
             ServerSocketChannel unix = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            inet.bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
            unix.bind(UnixDomainSocketAddress.of(socketPath));

            assertThat(io.socketFamily(fdOf(inet))).isEqualTo(NativeIo.AF_INET);
            assertThat(io.socketFamily(fdOf(unix))).isEqualTo(NativeIo.AF_UNIX);
        }
    }

    @Test
    void shouldReportInet6SocketFamily() throws Exception {
        final ServerSocketChannel inet6;
        try {
            inet6 = ServerSocketChannel.open(StandardProtocolFamily.INET6);
        } catch (final UnsupportedOperationException | IOException e) {
            Assumptions.assumeTrue(false, "no IPv6 sockets here: " + e);
            return;
        }
        try (inet6) {
            assertThat(io.socketFamily(fdOf(inet6))).isEqualTo(NativeIo.AF_INET6);
        }
    }

    @Test
    void shouldFailSocketFamilyOnAFile() throws Exception {
        final int fd = open(filledFile("notasocket", 4096), NativeIo.O_RDONLY);

        assertThatThrownBy(() -> io.socketFamily(fd))
            .isInstanceOfSatisfying(NativeIoException.class, e -> assertThat(e.errno()).isEqualTo(88)) // ENOTSOCK
            .hasMessageContaining("SO_DOMAIN");
    }

    @Test
    void shouldSizeAndZeroOutALoopDevice() throws Exception {
        final boolean root = Integer.valueOf(0).equals(Files.getAttribute(Path.of("/proc/self"), "unix:uid"));
        final Path losetup = findExecutable("losetup");
        Assumptions.assumeTrue(root && losetup != null, "needs root and losetup (root=" + root + ", losetup="
            + losetup + ")");

        final int size = 64 * MIB;
        final Path backing = dir.resolve("loop.img");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(size);
            final byte[] fill = new byte[MIB];
            Arrays.fill(fill, FILL);
            f.seek(MIB);
            f.write(fill);
        }
        final Result attach = run(losetup.toString(), "-f", "--show", backing.toString());
        Assumptions.assumeTrue(attach.exitCode == 0, "losetup -f --show failed: " + attach.output);
        final Path device = Path.of(attach.output.strip());
        try {
            final int fd = open(device, NativeIo.O_RDWR);

            assertThat(io.isBlockDevice(fd)).isTrue();
            assertThat(io.blockDeviceSize(fd)).isEqualTo(67108864L);
            assertRange(read(device, MIB, MIB), 0, MIB, FILL);

            io.blockZeroOut(fd, MIB, 512 * KIB);

            final byte[] bytes = read(device, MIB, MIB);
            assertRange(bytes, 0, 512 * KIB, (byte) 0);
            assertRange(bytes, 512 * KIB, MIB, FILL);

            io.blockDiscard(fd, 8 * MIB, MIB);
            assertThatThrownBy(() -> io.blockZeroOut(fd, 1, 512))
                .as("unaligned range")
                .isInstanceOfSatisfying(NativeIoException.class,
                    e -> assertThat(e.errno()).isEqualTo(NativeIo.EINVAL))
                .hasMessageContaining("offset=1, length=512");
            close(fd);
        } finally {
            for (final int fd : List.copyOf(openFds)) {
                close(fd);
            }
            final Result detach = run(losetup.toString(), "-d", device.toString());
            assertThat(detach.exitCode).as("losetup -d %s: %s", device, detach.output).isZero();
        }
    }

    /** {@code st_blocks}, which the JDK does not expose. */
    private static long allocatedBlocks(final Path file) throws IOException, InterruptedException {
        final Result stat = run("stat", "-c", "%b", file.toString());
        assertThat(stat.exitCode).as("stat: %s", stat.output).isZero();
        return Long.parseLong(stat.output.strip());
    }

    private static long address(final ByteBuffer buffer) throws ReflectiveOperationException {
        return (long) Class.forName("sun.nio.ch.DirectBuffer").getMethod("address").invoke(buffer);
    }

    /** The descriptor inside a JDK channel; {@code sun.nio.ch} is exported to the tests by the surefire flags. */
    private static int fdOf(final ServerSocketChannel channel) throws ReflectiveOperationException {
        return (int) Class.forName("sun.nio.ch.SelChImpl").getMethod("getFDVal").invoke(channel);
    }

    private static Path findExecutable(final String name) {
        final List<String> dirs = new ArrayList<>(List.of(System.getenv().getOrDefault("PATH", "").split(":")));
        dirs.addAll(List.of("/usr/sbin", "/sbin"));
        return dirs.stream()
            .filter(d -> !d.isEmpty())
            .map(d -> Path.of(d, name))
            .filter(Files::isExecutable)
            .findFirst()
            .orElse(null);
    }

    private record Result(int exitCode, String output) {
    }

    private static Result run(final String... command) throws IOException, InterruptedException {
        final Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        final String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            return new Result(-1, String.join(" ", command) + " timed out: " + output);
        }
        return new Result(process.exitValue(), output);
    }
}
