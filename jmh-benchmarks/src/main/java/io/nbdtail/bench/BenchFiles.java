package io.nbdtail.bench;

import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeMetadata;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.Comparator;
import java.util.UUID;
import java.util.concurrent.Executor;
import java.util.stream.Stream;

/** Temp files for the storage benchmarks: fully written (no holes), so reads hit data in the page cache. */
final class BenchFiles {
    private BenchFiles() {
    }

    /** A new temp directory; delete it with {@link #delete}. */
    static Path tempDir() throws IOException {
        return Files.createTempDirectory("nbdtail-bench-");
    }

    /** Writes {@code size} bytes of non-zero data to {@code file} and reads them back once (page-cache hot). */
    static Path filledFile(final Path dir, final String name, final long size) throws IOException {
        final Path file = dir.resolve(name);
        final ByteBuffer chunk = ByteBuffer.allocateDirect(1 << 20);
        for (int i = 0; i < chunk.capacity(); i++) {
            chunk.put(i, (byte) (i * 31 + 7));
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
            StandardOpenOption.READ)) {
            for (long pos = 0; pos < size; pos += chunk.capacity()) {
                chunk.clear().limit((int) Math.min(chunk.capacity(), size - pos));
                while (chunk.hasRemaining()) {
                    ch.write(chunk, pos + chunk.position());
                }
            }
            ch.force(false);
            for (long pos = 0; pos < size; pos += chunk.capacity()) {
                chunk.clear();
                ch.read(chunk, pos);
            }
        }
        return file;
    }

    /** A writable volume over {@code file}; its flushes run on {@code storage}. */
    static Volume volume(final Path file, final String name, final Executor storage) throws IOException {
        final FileBlockDevice device = FileBlockDevice.open(file, false, NativeIo.get());
        final VolumeMetadata meta = new VolumeMetadata(VolumeMetadata.FORMAT_VERSION, UUID.randomUUID(), name,
            VolumeMetadata.Kind.FILE, device.size(), null, "benchmark volume", false, Instant.now());
        return new Volume(meta, device, storage, () -> {
        });
    }

    static void delete(final Path dir) throws IOException {
        if (dir == null) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }
}
