package io.nbdtail.volume;

import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.volume.VolumeException.Code;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

class VolumeServiceTest {
    private static final long MIB = 1L << 20;

    @TempDir
    Path tmp;

    private Path data;
    private VolumeService service;

    @BeforeEach
    void setUp() throws Exception {
        data = tmp.resolve("data");
        service = VolumeService.open(data);
    }

    private Path volumeDir(final String name) {
        return data.resolve("volumes").resolve(name);
    }

    private static Code codeOf(final ThrowingRunnable action) {
        try {
            action.run();
        } catch (final VolumeException e) {
            return e.code();
        } catch (final Exception e) {
            throw new AssertionError("expected a VolumeException, got " + e, e);
        }
        throw new AssertionError("expected a VolumeException, nothing was thrown");
    }

    @FunctionalInterface
    private interface ThrowingRunnable {
        void run() throws Exception;
    }

    @Test
    void shouldCreateTheDataDirectoryLayout() {
        assertThat(service.dataDir()).isEqualTo(data.toAbsolutePath());
        assertThat(data.resolve("volumes")).isDirectory();
        assertThat(service.list()).isEmpty();
    }

    @Test
    void shouldCreateListInspectOpenAndWriteAFileVolume() throws Exception {
        final VolumeMetadata created = service.create("demo", 16 * MIB, null, "a test disk", false);

        assertThat(created.name()).isEqualTo("demo");
        assertThat(created.kind()).isEqualTo(VolumeMetadata.Kind.FILE);
        assertThat(created.size()).isEqualTo(16 * MIB);
        assertThat(created.formatVersion()).isEqualTo(VolumeMetadata.FORMAT_VERSION);
        assertThat(created.devicePath()).isNull();
        final Path raw = volumeDir("demo").resolve("data.raw");
        assertThat(Files.size(raw)).isEqualTo(16 * MIB);
        assertThat(PosixFilePermissions.toString(Files.getPosixFilePermissions(raw))).isEqualTo("rw-------");
        assertThat(service.list()).containsExactly(created);

        final VolumeInfo fresh = service.info("demo");
        assertThat(fresh.metadata()).isEqualTo(created);
        assertThat(fresh.dataPath()).isEqualTo(raw.toAbsolutePath());
        assertThat(fresh.allocatedBytes()).isZero();
        assertThat(fresh.inUse()).isFalse();

        try (Volume volume = service.openVolume("demo", Runnable::run)) {
            assertThat(volume.size()).isEqualTo(16 * MIB);
            final ByteBuffer bytes = ByteBuffer.allocateDirect(64 * 1024);
            while (bytes.hasRemaining()) {
                bytes.put((byte) 0x5a);
            }
            volume.write(bytes.flip(), MIB);
            final VolumeInfo busy = service.info("demo");
            assertThat(busy.inUse()).isTrue();
            assertThat(busy.allocatedBytes()).isGreaterThanOrEqualTo(64 * 1024);

            assertThatThrownBy(() -> service.openVolume("demo", Runnable::run))
                .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.LOCKED))
                .hasMessage("volume 'demo' is in use by another nbdtail process (lock "
                    + volumeDir("demo").resolve("lock").toAbsolutePath() + " is held); stop that process first, or"
                    + " serve a different data directory");
        }

        assertThat(service.info("demo").inUse()).isFalse();
        try (Volume again = service.openVolume("demo", Runnable::run)) {
            final ByteBuffer back = ByteBuffer.allocate(4);
            again.read(back, MIB + 100);
            assertThat(back.array()).containsOnly(0x5a);
        }
    }

    @Test
    void shouldWriteAPrettyRecordInAStableOrderThatASecondServiceReads() throws Exception {
        final VolumeMetadata created = service.create("rec", MIB, null, null, true);
        final String json = Files.readString(volumeDir("rec").resolve("volume.json"));

        assertThat(json).contains("\n  \"formatVersion\" : 1,").contains("\"created\" : \"" + created.created() + "\"")
            .endsWith("}\n");
        final List<String> keys = Arrays.stream(json.split("\n")).filter(l -> l.startsWith("  \""))
            .map(l -> l.substring(3, l.indexOf('"', 3))).toList();
        assertThat(keys).containsExactly("formatVersion", "id", "name", "kind", "size", "devicePath", "description",
            "readOnly", "created");
        assertThat(created.description()).isEmpty();
        assertThat(created.readOnly()).isTrue();
        assertThat(volumeDir("rec").resolve("volume.json.tmp")).doesNotExist();
        assertThat(VolumeService.open(data).list()).containsExactly(created);
    }

    @Test
    void shouldListSortedByName() throws Exception {
        for (final String name : List.of("web2", "db1", "Web1", "a.b_c-d")) {
            service.create(name, MIB, null, "", false);
        }
        assertThat(service.list()).extracting(VolumeMetadata::name).containsExactly("Web1", "a.b_c-d", "db1", "web2");
    }

    @ParameterizedTest
    @ValueSource(strings = {"", "../x", "a/b", "a@b", ".", "..", ".hidden", "-x", "_x", "with space", "tab\tname",
        "ü"})
    void shouldRejectBadNames(final String name) {
        assertThat(codeOf(() -> service.create(name, MIB, null, "", false))).isEqualTo(Code.INVALID_NAME);
        assertThat(data.resolve("volumes")).isEmptyDirectory();
    }

    @Test
    void shouldExplainWhyANameIsRejected() {
        assertThatThrownBy(() -> VolumeService.checkName("x".repeat(129))).hasMessageContaining("129 characters")
            .hasMessageContaining("at most 128");
        assertThatThrownBy(() -> VolumeService.checkName("a@b")).hasMessageContaining("'a@b'")
            .hasMessageContaining("'@' is reserved for snapshot exports");
        assertThatThrownBy(() -> VolumeService.checkName(null)).isInstanceOf(VolumeException.class);
        assertThatThrownBy(() -> VolumeService.checkName("bell\u0007")).hasMessageContaining("'bell\\u0007'");
        assertThat(codeOf(() -> VolumeService.checkName("x".repeat(129)))).isEqualTo(Code.INVALID_NAME);
        assertThat(codeOf(() -> VolumeService.checkName(""))).isEqualTo(Code.INVALID_NAME);
    }

    @Test
    void shouldAcceptNamesAtTheLimits() throws Exception {
        VolumeService.checkName("a");
        VolumeService.checkName("9");
        VolumeService.checkName("A" + "._-".repeat(42) + "z");
        service.create("x".repeat(128), 512, null, "", false);
        assertThat(service.list()).hasSize(1);
    }

    @ParameterizedTest
    @ValueSource(longs = {0, -1, -512, 1000, 513, (1L << 62) + 512, Long.MAX_VALUE, Long.MIN_VALUE})
    void shouldRejectBadSizes(final long size) {
        assertThat(codeOf(() -> service.create("sized", size, null, "", false))).isEqualTo(Code.INVALID_SIZE);
        assertThat(data.resolve("volumes")).isEmptyDirectory();
    }

    @Test
    void shouldExplainWhyASizeIsRejected() {
        assertThatThrownBy(() -> service.create("s", 1000, null, "", false))
            .hasMessage("invalid volume size 1000: it must be a multiple of 512 bytes, for example 1024");
        assertThatThrownBy(() -> service.create("s", 0, null, "", false)).hasMessageContaining("size 0")
            .hasMessageContaining("greater than 0");
        assertThatThrownBy(() -> service.create("s", (1L << 62) + 512, null, "", false))
            .hasMessageContaining("at most 2^62 bytes (4 EiB)");
    }

    @Test
    void shouldRefuseADuplicateName() throws Exception {
        final VolumeMetadata first = service.create("dup", MIB, null, "first", false);
        assertThatThrownBy(() -> service.create("dup", 2 * MIB, null, "second", false))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.ALREADY_EXISTS))
            .hasMessageContaining("volume 'dup' already exists");
        assertThat(service.list()).containsExactly(first);
        assertThat(Files.size(volumeDir("dup").resolve("data.raw"))).isEqualTo(MIB);
    }

    @Test
    void shouldRefuseASecondLockOfTheDataDirectoryNamingTheHolder() throws Exception {
        try (AutoCloseable held = service.lockDataDirectory()) {
            assertThat(Files.readString(data.resolve("nbdtail.lock")))
                .isEqualTo("pid=" + ProcessHandle.current().pid() + "\n");
            assertThatThrownBy(() -> VolumeService.open(data).lockDataDirectory())
                .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.LOCKED))
                .hasMessage("data directory " + data.toAbsolutePath() + " is already served by another nbdtail"
                    + " process (pid " + ProcessHandle.current().pid() + " from "
                    + data.resolve("nbdtail.lock").toAbsolutePath() + "); stop it first");
        }
        service.lockDataDirectory().close();
    }

    @Test
    void shouldRemoveLeftoversOfInterruptedCreatesAndDeletesOnOpen() throws Exception {
        service.create("kept", MIB, null, "", false);
        final Path volumes = data.resolve("volumes");
        final Path creating = Files.createDirectories(volumes.resolve(".x.creating-1234"));
        Files.writeString(creating.resolve("volume.json.tmp"), "{");
        Files.createFile(creating.resolve("data.raw"));
        final Path bare = Files.createDirectories(volumes.resolve(".creating-x"));
        final Path deleting = Files.createDirectories(volumes.resolve(".y.deleting-abcd"));
        Files.createFile(deleting.resolve("lock"));
        final Path recordless = Files.createDirectories(volumes.resolve("gone"));
        Files.createFile(recordless.resolve("lock"));

        VolumeService.open(data);

        assertThat(creating).doesNotExist();
        assertThat(bare).doesNotExist();
        assertThat(deleting).doesNotExist();
        assertThat(recordless).doesNotExist();
        assertThat(volumeDir("kept").resolve("data.raw")).exists();
        assertThat(service.list()).extracting(VolumeMetadata::name).containsExactly("kept");
    }

    @Test
    void shouldKeepADirectoryWithDataButNoRecord() throws Exception {
        final Path orphan = Files.createDirectories(data.resolve("volumes").resolve("orphan"));
        Files.writeString(orphan.resolve("data.raw"), "someone's bytes");

        VolumeService.open(data);

        assertThat(orphan.resolve("data.raw")).exists();
        assertThat(service.list()).isEmpty();
        assertThatThrownBy(() -> service.create("orphan", MIB, null, "", false))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.ALREADY_EXISTS))
            .hasMessageContaining("holds no volume.json");
    }

    @Test
    void shouldLeaveLeftoversAloneWhileAnotherHolderHasTheDataDirectory() throws Exception {
        final Path creating = Files.createDirectories(data.resolve("volumes").resolve(".busy.creating-1"));
        try (AutoCloseable server = service.lockDataDirectory()) {
            VolumeService.open(data);
            assertThat(creating).exists();
        }
        VolumeService.open(data);
        assertThat(creating).doesNotExist();
    }

    @Test
    void shouldSkipCorruptAndUnknownRecordsWhenListing() throws Exception {
        final VolumeMetadata good = service.create("good", MIB, null, "", false);
        service.create("broken", MIB, null, "", false);
        service.create("future", MIB, null, "", false);
        service.create("renamed", MIB, null, "", false);
        Files.writeString(volumeDir("broken").resolve("volume.json"), "{\"formatVersion\": 1, \"name\": ");
        final Path future = volumeDir("future").resolve("volume.json");
        Files.writeString(future, Files.readString(future).replace("\"formatVersion\" : 1", "\"formatVersion\" : 2")
            .replace("\"created\"", "\"snapshots\" : [], \"created\""));
        final Path renamed = volumeDir("renamed").resolve("volume.json");
        Files.writeString(renamed, Files.readString(renamed).replace("\"renamed\"", "\"other\""));

        assertThat(service.list()).containsExactly(good);

        assertThatThrownBy(() -> service.info("broken"))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.CORRUPT))
            .hasMessageContaining(volumeDir("broken").resolve("volume.json").toAbsolutePath().toString())
            .hasMessageContaining("not valid JSON");
        assertThatThrownBy(() -> service.openVolume("future", Runnable::run))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.CORRUPT))
            .hasMessageContaining("format version 2").hasMessageContaining("upgrade nbdtail");
        assertThatThrownBy(() -> service.info("renamed")).hasMessageContaining("names volume 'other'");
        // The failed open released the lock it took: delete needs it.
        service.delete("future");
        assertThat(volumeDir("future")).doesNotExist();
    }

    @Test
    void shouldRejectARecordWithAMissingField() throws Exception {
        service.create("partial", MIB, null, "", true);
        final Path record = volumeDir("partial").resolve("volume.json");
        Files.writeString(record, Files.readString(record).replace("\"readOnly\" : true,", ""));
        assertThat(service.list()).isEmpty();
        assertThat(codeOf(() -> service.info("partial"))).isEqualTo(Code.CORRUPT);
    }

    @Test
    void shouldRefuseToOpenAVolumeWhoseFileDoesNotMatchItsRecord() throws Exception {
        service.create("short", 4 * MIB, null, "", false);
        try (RandomAccessFile raf = new RandomAccessFile(volumeDir("short").resolve("data.raw").toFile(), "rw")) {
            raf.setLength(MIB);
        }
        assertThatThrownBy(() -> service.openVolume("short", Runnable::run))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.CORRUPT))
            .hasMessageContaining("has " + MIB + " bytes but its volume.json records " + 4 * MIB);
        assertThat(service.info("short").inUse()).isFalse();

        Files.delete(volumeDir("short").resolve("data.raw"));
        assertThatThrownBy(() -> service.openVolume("short", Runnable::run)).hasMessageContaining("is missing");
        assertThat(codeOf(() -> service.info("short"))).isEqualTo(Code.CORRUPT);
    }

    @Test
    void shouldRefuseToDeleteAnOpenVolumeThenDeleteEverything() throws Exception {
        service.create("doomed", MIB, null, "", false);
        try (Volume open = service.openVolume("doomed", Runnable::run)) {
            assertThatThrownBy(() -> service.delete("doomed"))
                .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.LOCKED))
                .hasMessageContaining("volume 'doomed' is in use").hasMessageContaining("stop serving it");
            assertThat(open.size()).isEqualTo(MIB);
        }
        assertThat(volumeDir("doomed").resolve("data.raw")).exists();

        service.delete("doomed");

        assertThat(data.resolve("volumes")).isEmptyDirectory();
        assertThat(service.list()).isEmpty();
        assertThat(codeOf(() -> service.delete("doomed"))).isEqualTo(Code.NOT_FOUND);
        service.create("doomed", MIB, null, "", false);
    }

    @Test
    void shouldDeleteAVolumeWithACorruptRecord() throws Exception {
        service.create("mangled", MIB, null, "", false);
        Files.writeString(volumeDir("mangled").resolve("volume.json"), "garbage");
        service.delete("mangled");
        assertThat(volumeDir("mangled")).doesNotExist();
    }

    @Test
    void shouldReportMissingVolumesByNameWithWhatToDo() {
        assertThatThrownBy(() -> service.info("nope"))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.NOT_FOUND))
            .hasMessage("volume 'nope' not found in " + data.toAbsolutePath() + "; check the name with 'nbdtail"
                + " volume list --data-dir " + data.toAbsolutePath() + "'");
        assertThat(codeOf(() -> service.openVolume("nope", Runnable::run))).isEqualTo(Code.NOT_FOUND);
        assertThat(codeOf(() -> service.delete("nope"))).isEqualTo(Code.NOT_FOUND);
        assertThat(codeOf(() -> service.info("../data"))).isEqualTo(Code.INVALID_NAME);
    }

    @Test
    void shouldRejectAPathThatIsNotABlockDevice() throws Exception {
        final Path file = Files.writeString(tmp.resolve("plain.img"), "not a disc");
        assertThatThrownBy(() -> service.create("dev", 0, file.toString(), "", false))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.INVALID_DEVICE))
            .hasMessageContaining(file + " is a regular file, not a block device");
        assertThat(codeOf(() -> service.create("dev", 0, tmp.toString(), "", false))).isEqualTo(Code.INVALID_DEVICE);
        assertThat(codeOf(() -> service.create("dev", 0, tmp.resolve("absent").toString(), "", false)))
            .isEqualTo(Code.INVALID_DEVICE);
        assertThat(codeOf(() -> service.create("dev", 0, " ", "", false))).isEqualTo(Code.INVALID_DEVICE);
        assertThat(data.resolve("volumes")).isEmptyDirectory();
    }

    @Test
    void shouldRegisterABlockDeviceWithoutTouchingIt() throws Exception {
        final Optional<BlockDeviceFixture> found = BlockDeviceFixture.find();
        assumeTrue(found.isPresent(), "no readable block device on this machine");
        final BlockDeviceFixture device = found.get();

        assertThatThrownBy(() -> service.create("lv", device.size() + 512, device.path().toString(), "", false))
            .hasMessageContaining("size " + (device.size() + 512) + " does not match " + device.path() + ", which"
                + " has " + device.size() + " bytes")
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.INVALID_SIZE));
        final VolumeMetadata lv = service.create("lv", 0, device.path().toString(), "raid", false);
        assertThat(lv.kind()).isEqualTo(VolumeMetadata.Kind.BLOCK_DEVICE);
        assertThat(lv.size()).isEqualTo(device.size());
        assertThat(lv.devicePath()).isEqualTo(device.path().toString());
        assertThat(volumeDir("lv").resolve("data.raw")).doesNotExist();

        final VolumeInfo info = service.info("lv");
        assertThat(info.dataPath()).isEqualTo(device.path());
        assertThat(info.allocatedBytes()).isEqualTo(device.size());
        assertThatThrownBy(() -> service.create("lv2", device.size(), device.path().toString(), "", false))
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.ALREADY_EXISTS))
            .hasMessageContaining("already registered as volume 'lv'");

        service.delete("lv");
        assertThat(device.path()).exists();
        assertThat(service.list()).isEmpty();
    }

    @Test
    void shouldServeARegisteredBlockDeviceAndNeverDeleteIt() throws Exception {
        final Path disc = tmp.resolve("fake-lv");
        try (RandomAccessFile raf = new RandomAccessFile(disc.toFile(), "rw")) {
            raf.setLength(8 * MIB);
        }
        final VolumeService devices = VolumeService.open(data, FakeBlockDevice.of(disc, 8 * MIB));

        final VolumeMetadata lv = devices.create("lv", 8 * MIB, disc.toString(), "on raid", false);
        assertThat(lv.kind()).isEqualTo(VolumeMetadata.Kind.BLOCK_DEVICE);
        assertThat(lv.devicePath()).isEqualTo(disc.toString());
        assertThat(volumeDir("lv").resolve("data.raw")).doesNotExist();
        assertThat(devices.info("lv").allocatedBytes()).isEqualTo(8 * MIB);
        assertThat(devices.info("lv").dataPath()).isEqualTo(disc);
        assertThatThrownBy(() -> devices.create("lv2", 0, disc.toString(), "", false))
            .hasMessageContaining("device " + disc + " is already registered as volume 'lv'")
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.ALREADY_EXISTS));
        assertThatThrownBy(() -> devices.create("lv2", 4 * MIB, disc.toString(), "", false))
            .hasMessageContaining("size " + 4 * MIB + " does not match " + disc + ", which has " + 8 * MIB + " bytes")
            .isInstanceOfSatisfying(VolumeException.class, e -> assertThat(e.code()).isEqualTo(Code.INVALID_SIZE));

        try (Volume volume = devices.openVolume("lv", Runnable::run)) {
            assertThat(volume.device().isBlockDevice()).isTrue();
            volume.write(ByteBuffer.wrap("raid bytes".getBytes(StandardCharsets.US_ASCII)), 4096);
            assertThat(codeOf(() -> devices.openVolume("lv", Runnable::run))).isEqualTo(Code.LOCKED);
            assertThat(codeOf(() -> devices.delete("lv"))).isEqualTo(Code.LOCKED);
        }
        devices.delete("lv");

        assertThat(devices.list()).isEmpty();
        assertThat(Files.size(disc)).isEqualTo(8 * MIB);
        try (RandomAccessFile raf = new RandomAccessFile(disc.toFile(), "r")) {
            final byte[] back = new byte[10];
            raf.seek(4096);
            raf.readFully(back);
            assertThat(new String(back, StandardCharsets.US_ASCII)).isEqualTo("raid bytes");
        }
    }

    /**
     * The real system calls, except that one regular file passes for a block device of a given size. A proxy, so
     * that methods added to {@link NativeIo} later pass through without touching this test.
     */
    private static final class FakeBlockDevice implements InvocationHandler {
        private final NativeIo real = NativeIo.get();
        private final String path;
        private final long size;
        private final Set<Integer> fds = ConcurrentHashMap.newKeySet();

        private FakeBlockDevice(final Path path, final long size) {
            this.path = path.toString();
            this.size = size;
        }

        static NativeIo of(final Path path, final long size) {
            return (NativeIo) Proxy.newProxyInstance(NativeIo.class.getClassLoader(), new Class<?>[] {NativeIo.class},
                new FakeBlockDevice(path, size));
        }

        @Override
        public Object invoke(final Object proxy, final Method method, final Object[] args) throws Throwable {
            final boolean fake = args != null && args.length > 0 && args[0] instanceof Integer fd && fds.contains(fd);
            switch (method.getName()) {
                case "isBlockDevice" -> {
                    if (fake) {
                        return true;
                    }
                }
                case "blockDeviceSize" -> {
                    if (fake) {
                        return size;
                    }
                }
                case "close" -> fds.remove((Integer) args[0]);
                default -> {
                    // Passed through below.
                }
            }
            final Object result;
            try {
                result = method.invoke(real, args);
            } catch (final InvocationTargetException e) {
                throw e.getCause();
            }
            if (method.getName().equals("open") && path.equals(args[0])) {
                fds.add((Integer) result);
            }
            return result;
        }
    }

    /** A block device this test may open read-only to learn its size (never a loop device: other tests own those). */
    private record BlockDeviceFixture(Path path, long size) {
        static Optional<BlockDeviceFixture> find() throws IOException {
            final Path sys = Path.of("/sys/block");
            if (!Files.isDirectory(sys)) {
                return Optional.empty();
            }
            try (Stream<Path> devices = Files.list(sys)) {
                return devices.map(p -> p.getFileName().toString()).filter(n -> !n.startsWith("loop")).sorted()
                    .map(BlockDeviceFixture::of).flatMap(Optional::stream).findFirst();
            }
        }

        private static Optional<BlockDeviceFixture> of(final String name) {
            final Path dev = Path.of("/dev", name);
            try {
                final long sectors = Long.parseLong(Files.readString(Path.of("/sys/block", name, "size"),
                    StandardCharsets.US_ASCII).trim());
                if (sectors <= 0) {
                    return Optional.empty();
                }
                // Readable by mode bits is not enough: a container's device cgroup may still refuse the open.
                try (FileChannel probe = FileChannel.open(dev, StandardOpenOption.READ)) {
                    return Optional.of(new BlockDeviceFixture(dev, sectors * 512));
                }
            } catch (final IOException | NumberFormatException e) {
                return Optional.empty();
            }
        }
    }
}
