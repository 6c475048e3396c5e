package io.nbdtail.layer;

import com.code_intelligence.jazzer.junit.FuzzTest;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.UUID;

/**
 * Coverage-guided fuzzing (Jazzer) of the snapshot metadata parsers: a damaged or hostile {@code manifest} or
 * {@code .map} file (reliability.md S9). Either parses into something that passes its own checks, or fails with
 * {@link LayerCorruptException}; never another exception, never an allocation sized by the file, never a hang.
 *
 * <p>Without {@code JAZZER_FUZZ} these replay the seeds and past findings in
 * {@code src/test/resources/io/nbdtail/layer/LayerMetadataFuzzTestInputs/<method>/}; {@code bin/fuzz} runs the
 * fuzzer.
 */
class LayerMetadataFuzzTest {
    private static final UUID LAYER = new UUID(0x1234, 0x5678);
    private static final long SIZE = 3L << 20;
    private static Path dir;

    @BeforeAll
    static void open() throws IOException {
        dir = Files.createTempDirectory("nbdtail-fuzz-layer");
    }

    @AfterAll
    static void close() throws IOException {
        try (var files = Files.list(dir)) {
            for (final Path f : files.toList()) {
                Files.delete(f);
            }
        }
        Files.delete(dir);
    }

    @FuzzTest(maxDuration = "10m")
    void manifest(final byte[] input) {
        try {
            final Manifest m = Manifest.decode(input, "fuzz");
            // A manifest that parses is one the rest of the code can walk without surprises.
            for (final Manifest.LayerRecord r : m.layers()) {
                m.chain(r.id());
                m.children(r.id());
            }
            m.active();
        } catch (final LayerCorruptException expected) {
            // the one allowed outcome for bad input
        }
    }

    /** The input is a map file: a valid header for a 3 MiB layer followed by the fuzzed bytes, or raw bytes. */
    @FuzzTest(maxDuration = "10m")
    void clusterMap(final byte[] input) throws IOException {
        final Path file = dir.resolve("layer.map");
        Files.deleteIfExists(file);
        if (input.length > 0 && (input[0] & 1) == 0) {
            try (ClusterMap fresh = ClusterMap.create(file, LAYER, SIZE, LayeredDevice.CLUSTER_SIZE)) {
                fresh.set(3, ClusterMap.DATA);
                fresh.flush();
            }
            try (var ch = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.WRITE)) {
                ch.write(java.nio.ByteBuffer.wrap(input, 1, input.length - 1), ClusterMap.BLOCK);
            }
        } else {
            Files.write(file, input);
        }
        try (ClusterMap map = ClusterMap.open(file, LAYER, SIZE, LayeredDevice.CLUSTER_SIZE, true)) {
            for (long c = 0; c < map.clusters(); c++) {
                final int state = map.state(c);
                if (state == 3) {
                    throw new IllegalStateException("a map that opened holds the undefined state 3");
                }
            }
        } catch (final LayerCorruptException expected) {
            // the one allowed outcome for bad input
        }
    }
}
