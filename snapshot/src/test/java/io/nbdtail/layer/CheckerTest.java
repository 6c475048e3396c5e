package io.nbdtail.layer;

import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeException;
import io.nbdtail.volume.VolumeService;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.UUID;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

/** {@code nbdtail check}: leaks are reported and freed, corruption is reported and never "repaired". */
class CheckerTest {
    private static final int CLUSTER = LayeredDevice.CLUSTER_SIZE;

    @TempDir
    Path tmp;
    private VolumeService service;
    private Path dir;

    @BeforeEach
    void setUp() throws Exception {
        service = VolumeService.open(tmp.resolve("data"));
        service.create("v", 16L * CLUSTER, null, "", false);
        dir = tmp.resolve("data/volumes/v");
    }

    @Test
    void aCleanVolumeWithSnapshotsChecksClean() throws Exception {
        try (Volume v = service.openVolume("v", Runnable::run)) {
            v.write(ByteBuffer.wrap(new byte[] {1, 2, 3}), 0);
            v.layers().createSnapshot("s1", Instant.now());
            v.write(ByteBuffer.wrap(new byte[] {4}), 5L * CLUSTER);
        }
        final Checker.Report report = service.check("v", false);
        assertThat(report.corruptions()).isEmpty();
        assertThat(report.leaks()).isEmpty();
        assertThat(report.exitCode()).isZero();
    }

    @Test
    void dataWrittenButNeverFlushedIsALeakThatRepairFreesWithoutTouchingHeldData() throws Exception {
        final UUID active;
        try (Volume v = service.openVolume("v", Runnable::run)) {
            v.layers().createSnapshot("s1", Instant.now());
            v.write(ByteBuffer.wrap(new byte[] {9}), 0);
            v.flush(e -> assertThat(e).isNull());
            active = v.layers().manifest().active().id();
        }
        // A crash after a write reached the data file but before a FLUSH persisted its map state: the cluster's
        // data is there, its state is not.
        try (var data = java.nio.channels.FileChannel.open(LayeredDevice.dataPath(dir, active),
            java.nio.file.StandardOpenOption.WRITE)) {
            data.write(ByteBuffer.wrap(new byte[4096]).put(0, (byte) 7), 3L * CLUSTER);
        }
        Files.writeString(dir.resolve("layers").resolve(UUID.randomUUID() + ".data"), "orphan");
        final Checker.Report found = service.check("v", false);
        assertThat(found.corruptions()).isEmpty();
        assertThat(found.leaks()).hasSize(2);
        assertThat(found.exitCode()).isEqualTo(3);
        final Checker.Report repaired = service.check("v", true);
        assertThat(repaired.exitCode()).isZero();
        assertThat(repaired.repairs()).hasSize(2);
        assertThat(service.check("v", false).exitCode()).isZero();
        try (Volume v = service.openVolume("v", Runnable::run)) {
            final ByteBuffer b = ByteBuffer.allocate(1);
            v.read(b, 0);
            assertThat(b.get(0)).isEqualTo((byte) 9); // the held cluster is untouched
        }
    }

    @Test
    void aDamagedManifestIsCorruptionAndTheVolumeIsNotServed() throws Exception {
        try (Volume v = service.openVolume("v", Runnable::run)) {
            v.layers().createSnapshot("s1", Instant.now());
        }
        final byte[] bytes = Files.readAllBytes(dir.resolve(Manifest.FILE));
        bytes[bytes.length - 5] ^= 0x20;
        Files.write(dir.resolve(Manifest.FILE), bytes);
        final Checker.Report report = service.check("v", true);
        assertThat(report.exitCode()).isEqualTo(2);
        assertThat(report.corruptions().getFirst()).contains("checksum");
        assertThat(Files.list(dir.resolve("layers")).count()).as("repair deletes nothing").isEqualTo(2);
        assertThatThrownBy(() -> service.openVolume("v", Runnable::run)).isInstanceOf(VolumeException.class)
            .extracting(e -> ((VolumeException) e).code()).isEqualTo(VolumeException.Code.NEEDS_CHECK);
    }

    @Test
    void theNeedsCheckFlagKeepsTheVolumeOutUntilACheckFindsNoCorruption() throws Exception {
        try (Volume v = service.openVolume("v", Runnable::run)) {
            v.layers().createSnapshot("s1", Instant.now());
        }
        Manifest.read(dir).withNeedsCheck(true, "a sync failed: EIO").write(dir);
        assertThatThrownBy(() -> service.openVolume("v", Runnable::run)).isInstanceOf(VolumeException.class)
            .hasMessageContaining("nbdtail check");
        final Checker.Report report = service.check("v", false);
        assertThat(report.exitCode()).isZero();
        assertThat(report.repairs()).anySatisfy(r -> assertThat(r).contains("needs-check"));
        service.openVolume("v", Runnable::run).close();
    }

    @Test
    void aManifestThatFailsItsChecksIsRejectedWithWhy() {
        assertThatThrownBy(() -> Manifest.decode(new byte[10], "m")).hasMessageContaining("too short");
        assertThatThrownBy(() -> Manifest.decode(new byte[40], "m")).hasMessageContaining("magic");
    }
}
