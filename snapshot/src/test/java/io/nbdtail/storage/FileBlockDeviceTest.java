package io.nbdtail.storage;

import io.nbdtail.storage.nativeio.NativeIo;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.assertj.core.api.Assertions.assertThat;

/** A sparse file through {@link FileBlockDevice}: bytes, holes and allocation, read back from the file itself. */
class FileBlockDeviceTest {
    private static final int SIZE = 8 << 20;

    @TempDir
    Path dir;
    private Path file;
    private FileBlockDevice device;

    @BeforeEach
    void setUp() throws Exception {
        file = dir.resolve("data.raw");
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.setLength(SIZE);
        }
        device = FileBlockDevice.open(file, false, NativeIo.get());
    }

    @AfterEach
    void tearDown() {
        device.close();
    }

    private static ByteBuffer filled(final int length, final int value) {
        final ByteBuffer b = ByteBuffer.allocateDirect(length);
        while (b.hasRemaining()) {
            b.put((byte) value);
        }
        return b.flip();
    }

    private record Extent(long length, int flags) {
    }

    private List<Extent> allocation(final long offset, final long length) throws Exception {
        final List<Extent> list = new ArrayList<>();
        device.allocation(offset, length, (l, f) -> list.add(new Extent(l, f)), 100);
        return list;
    }

    @Test
    void shouldWriteAndReadBackBytesAtUnalignedOffsets() throws Exception {
        device.write(filled(10_000, 0x5a), 4095);
        device.sync();
        final byte[] onDisk = Files.readAllBytes(file);
        assertThat(onDisk[4094]).isZero();
        assertThat(onDisk[4095]).isEqualTo((byte) 0x5a);
        assertThat(onDisk[4095 + 9999]).isEqualTo((byte) 0x5a);
        assertThat(onDisk[4095 + 10_000]).isZero();
        final ByteBuffer back = ByteBuffer.allocateDirect(10_002);
        device.read(back, 4094);
        assertThat(back.get(0)).isZero();
        assertThat(back.get(1)).isEqualTo((byte) 0x5a);
        assertThat(back.get(10_001)).isZero();
    }

    @Test
    void shouldSkipLookupsOnAFileWithoutHolesUntilOneIsPunched() throws Exception {
        device.write(filled(SIZE, 3), 0);
        device.close();
        final AtomicInteger seeks = new AtomicInteger();
        final NativeIo real = NativeIo.get();
        final NativeIo counting = (NativeIo) Proxy.newProxyInstance(NativeIo.class.getClassLoader(),
            new Class<?>[] {NativeIo.class}, (proxy, method, args) -> {
                if (method.getName().startsWith("seek")) {
                    seeks.incrementAndGet();
                }
                try {
                    return method.invoke(real, args);
                } catch (final InvocationTargetException e) {
                    throw e.getCause();
                }
            });
        device = FileBlockDevice.open(file, false, counting);
        final int atOpen = seeks.get();

        assertThat(allocation(4096, 65536)).containsExactly(new Extent(65536, 0));
        assertThat(seeks.get()).as("lseek calls after open").isEqualTo(atOpen);

        device.discard(1 << 20, 1 << 20);
        assertThat(allocation(0, SIZE)).containsExactly(
            new Extent(1 << 20, 0),
            new Extent(1 << 20, ExtentSink.HOLE | ExtentSink.ZERO),
            new Extent(SIZE - (2 << 20), 0));
        assertThat(seeks.get()).isGreaterThan(atOpen);
    }

    @Test
    void shouldLookUpAllocationAfterZeroingOrGrowingAFileWithoutHoles() throws Exception {
        device.write(filled(SIZE, 3), 0);
        device.close();
        device = FileBlockDevice.open(file, false, NativeIo.get());
        device.writeZeroes(0, 65536, true, false);
        assertThat(allocation(0, 131072)).containsExactly(
            new Extent(65536, ExtentSink.HOLE | ExtentSink.ZERO), new Extent(65536, 0));

        device.close();
        device = FileBlockDevice.open(file, false, NativeIo.get());
        device.write(filled(65536, 4), 0);
        device.close();
        device = FileBlockDevice.open(file, false, NativeIo.get());
        device.grow(SIZE + (1 << 20));
        assertThat(allocation(SIZE - 4096, 4096 + (1 << 20))).containsExactly(
            new Extent(4096, 0), new Extent(1 << 20, ExtentSink.HOLE | ExtentSink.ZERO));
    }

    @Test
    void shouldReportHolesAndDataFromTheFileSystem() throws Exception {
        assertThat(allocation(0, SIZE)).containsExactly(new Extent(SIZE, ExtentSink.HOLE | ExtentSink.ZERO));
        device.write(filled(65536, 1), 1 << 20);
        assertThat(allocation(0, SIZE)).containsExactly(
            new Extent(1 << 20, ExtentSink.HOLE | ExtentSink.ZERO),
            new Extent(65536, 0),
            new Extent(SIZE - (1 << 20) - 65536, ExtentSink.HOLE | ExtentSink.ZERO));
        // A query inside the data extent is clipped to the query.
        assertThat(allocation((1 << 20) + 4096, 8192)).containsExactly(new Extent(8192, 0));
    }

    @Test
    void shouldPunchAHoleForZeroesWhenUnmapIsAllowedAndKeepAllocationOtherwise() throws Exception {
        device.write(filled(1 << 20, 0xff), 0);
        device.writeZeroes(0, 65536, true, true);
        device.writeZeroes(65536, 65536, false, false);
        final byte[] onDisk = Files.readAllBytes(file);
        assertThat(Arrays.copyOfRange(onDisk, 0, 131072)).containsOnly(0);
        assertThat(onDisk[131072]).isEqualTo((byte) 0xff);
        assertThat(allocation(0, 1 << 20)).containsExactly(
            new Extent(65536, ExtentSink.HOLE | ExtentSink.ZERO),
            new Extent((1 << 20) - 65536, 0));
    }

    @Test
    void shouldDiscardToAHoleThatReadsAsZeros() throws Exception {
        device.write(filled(1 << 20, 0x11), 0);
        device.discard(262144, 262144);
        final ByteBuffer back = ByteBuffer.allocateDirect(262144);
        device.read(back, 262144);
        for (int i = 0; i < back.capacity(); i++) {
            assertThat(back.get(i)).isZero();
        }
        assertThat(allocation(262144, 262144)).containsExactly(new Extent(262144, ExtentSink.HOLE | ExtentSink.ZERO));
    }

    @Test
    void shouldStopAfterMaxExtents() throws Exception {
        for (int i = 0; i < 8; i++) {
            device.write(filled(4096, 1), i * 65536L);
        }
        final List<Extent> list = new ArrayList<>();
        final long described = device.allocation(0, SIZE, (l, f) -> list.add(new Extent(l, f)), 3);
        assertThat(list).hasSize(3);
        assertThat(described).isEqualTo(list.stream().mapToLong(Extent::length).sum()).isLessThan(SIZE);
    }

    @Test
    void shouldReportItsSizeAndKind() {
        assertThat(device.size()).isEqualTo(SIZE);
        assertThat(device.isBlockDevice()).isFalse();
    }
}
