package io.nbdtail.bench;

import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.StorageException;
import io.nbdtail.storage.nativeio.NativeIo;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.ByteBuffer;
import java.nio.file.Path;

/**
 * {@link FileBlockDevice} reads and writes on a page-cache-hot 256 MiB file into a pooled direct buffer, at
 * offsets that walk the file in {@code size} steps.
 *
 * <ul>
 *   <li>{@code preadAddress} / {@code pwriteAddress}: the server's hot path (native address, JNR-FFI
 *       {@code pread}/{@code pwrite});</li>
 *   <li>{@code preadByteBuffer}: the same read through the JDK's {@code FileChannel} (the fallback path);</li>
 *   <li>{@code preadFfm}: a reference that is not server code, {@code pread} through the JDK's own FFM linker on
 *       the same descriptor, to show what the JNR call itself costs.</li>
 * </ul>
 */
@State(Scope.Thread)
public class FileBlockDeviceBenchmark extends BenchmarkBase {
    private static final long FILE_SIZE = 256L << 20;
    private static final MethodHandle PREAD = Linker.nativeLinker().downcallHandle(
        Linker.nativeLinker().defaultLookup().find("pread").orElseThrow(),
        FunctionDescriptor.of(ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG,
            ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG));

    @Param({"4096", "65536", "1048576"})
    int size;

    private Path dir;
    private FileBlockDevice device;
    private ByteBuf buf;
    private long address;
    private ByteBuffer nio;
    private long offset;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        dir = BenchFiles.tempDir();
        final Path file = BenchFiles.filledFile(dir, "disk.raw", FILE_SIZE);
        device = FileBlockDevice.open(file, false, NativeIo.get());
        buf = PooledByteBufAllocator.DEFAULT.directBuffer(size, size);
        if (!buf.hasMemoryAddress()) {
            throw new IllegalStateException("direct buffers have no memory address: check the JVM flags");
        }
        address = buf.memoryAddress();
        nio = buf.nioBuffer(0, size);
    }

    @TearDown(Level.Trial)
    public void tearDown() throws Exception {
        buf.release();
        device.close();
        BenchFiles.delete(dir);
    }

    private long next() {
        final long o = offset;
        offset = (o + size) % FILE_SIZE;
        return o;
    }

    @Benchmark
    public long preadAddress() throws StorageException {
        final long o = next();
        device.read(address, size, o);
        return o;
    }

    @Benchmark
    public long pwriteAddress() throws StorageException {
        final long o = next();
        device.write(address, size, o);
        return o;
    }

    @Benchmark
    public long preadByteBuffer() throws StorageException {
        final long o = next();
        nio.clear();
        device.read(nio, o);
        return o;
    }

    @Benchmark
    public long preadFfm() throws Throwable {
        final long o = next();
        final long n = (long) PREAD.invokeExact(device.fd(), address, (long) size, o);
        if (n != size) {
            throw new IllegalStateException("short read " + n);
        }
        return o;
    }
}
