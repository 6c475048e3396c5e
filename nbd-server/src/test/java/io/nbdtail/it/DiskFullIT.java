package io.nbdtail.it;

import io.nbdtail.testing.ExternalTool;
import io.nbdtail.testing.TestServer;
import io.nbdtail.volume.Volume;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A thin volume on a file system that fills up: writes that need new space get ENOSPC (so qemu pauses the
 * guest rather than failing its I/O), overwrites of allocated blocks and reads keep working, and writing
 * resumes once space is freed. Uses a 16 MiB tmpfs, so it needs root; skipped with the reason otherwise.
 */
class DiskFullIT {
    @TempDir
    Path dir;

    @Test
    void shouldAnswerEnospcWhenTheFileSystemIsFullAndRecoverWhenSpaceIsFreed() throws Exception {
        final Path mount = dir.resolve("small");
        Files.createDirectories(mount);
        final ExternalTool.Result mounted = ExternalTool.run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
            mount.toString());
        if (mounted.exitCode() != 0) {
            System.out.println("DiskFullIT skipped: cannot mount a tmpfs (needs root): " + mounted.stderr());
        }
        assumeTrue(mounted.exitCode() == 0, "cannot mount a tmpfs: " + mounted.stderr());
        try (TestServer server = TestServer.start(mount.resolve("data"))) {
            server.createVolume("thin", 64L << 20);
            final String uri = server.uri("thin");
            // 4 MiB of data, then a filler that leaves almost no space.
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4M", "-c", "flush", uri).assertSuccess();
            final Path filler = mount.resolve("filler");
            ExternalTool.run("dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=64").exitCode();

            final ExternalTool.Result full = ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x55 8M 8M",
                uri);
            assertThat(full.output()).contains("No space left on device");

            // Allocated blocks can still be overwritten, and everything reads.
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x66 0 1M", "-c", "read -P 0x66 0 1M",
                "-c", "read -P 0x44 1M 3M", "-c", "flush", uri).assertSuccess();
            assertThat(server.export("thin").volume().failure()).as("ENOSPC does not fail the volume").isNull();

            Files.delete(filler);
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x55 8M 8M", "-c", "read -P 0x55 8M 8M",
                "-c", "flush", uri).assertSuccess();
        } finally {
            ExternalTool.run("umount", mount.toString());
        }
    }

    /**
     * reliability.md S5: a copy-on-write on a full file system answers ENOSPC, marks nothing (the cluster still
     * reads the snapshot's data), and succeeds once space is freed; the snapshot is never touched.
     */
    @Test
    void shouldAnswerEnospcToACopyOnWriteAndKeepTheSnapshot() throws Exception {
        final Path mount = dir.resolve("cow");
        Files.createDirectories(mount);
        final ExternalTool.Result mounted = ExternalTool.run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
            mount.toString());
        assumeTrue(mounted.exitCode() == 0, "cannot mount a tmpfs: " + mounted.stderr());
        try (TestServer server = TestServer.start(mount.resolve("data"))) {
            final Volume volume = server.createVolume("cow", 64L << 20);
            final String uri = server.uri("cow");
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x44 0 4M", "-c", "flush", uri).assertSuccess();
            volume.layers().createSnapshot("before", java.time.Instant.now());
            final Path filler = mount.resolve("filler");
            ExternalTool.run("dd", "if=/dev/zero", "of=" + filler, "bs=1M", "count=64").exitCode();

            final ExternalTool.Result full = ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x55 4k 4k",
                uri);
            assertThat(full.output()).contains("No space left on device");
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "read -P 0x44 0 4M", uri).assertSuccess();
            assertThat(volume.failure()).as("ENOSPC does not fail the volume").isNull();

            Files.delete(filler);
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x55 4k 4k", "-c", "read -P 0x44 0 4k",
                "-c", "read -P 0x55 4k 4k", "-c", "read -P 0x44 8k 4088k", "-c", "flush", uri).assertSuccess();
            try (var view = volume.layers().snapshotView("before")) {
                final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(4 << 20);
                view.read(b, 0);
                for (int i = 0; i < b.capacity(); i++) {
                    assertThat(b.get(i)).as("snapshot byte %d", i).isEqualTo((byte) 0x44);
                }
            }
        } finally {
            ExternalTool.run("umount", mount.toString());
        }
    }

    /**
     * reliability.md R5, inode exhaustion: with no inode left, writes to an existing volume (which need blocks,
     * not inodes) and reads go on; what needs new files — a snapshot, a new volume — fails with ENOSPC in its
     * message and leaves nothing half made; both succeed once inodes are freed, and the snapshot is a true one.
     */
    @Test
    void shouldKeepServingWhenInodesRunOutAndRefuseOnlyWhatNeedsNewFiles() throws Exception {
        final Path mount = dir.resolve("inodes");
        Files.createDirectories(mount);
        final ExternalTool.Result mounted = ExternalTool.run("mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=64",
            "tmpfs", mount.toString());
        assumeTrue(mounted.exitCode() == 0, "cannot mount a tmpfs: " + mounted.stderr());
        try (TestServer server = TestServer.start(mount.resolve("data"))) {
            final Volume volume = server.createVolume("ino", 32L << 20);
            final String uri = server.uri("ino");
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x31 0 1M", "-c", "flush", uri).assertSuccess();
            final Path fillers = mount.resolve("fillers");
            Files.createDirectories(fillers);
            int made = 0;
            try {
                while (made < 10_000) {
                    Files.createFile(fillers.resolve("f" + made));
                    made++;
                }
            } catch (final java.io.IOException inodesGone) {
                // The fill stops at the inode limit; the count below says it was reached.
            }
            assertThat(made).as("inodes ran out").isLessThan(10_000);

            // New blocks in an existing file need no inode: writes, reads and flushes go on.
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x32 8M 2M", "-c", "flush",
                "-c", "read -P 0x31 0 1M", "-c", "read -P 0x32 8M 2M", uri).assertSuccess();
            assertThat(volume.failure()).isNull();

            final Throwable snapshot = org.assertj.core.api.Assertions.catchThrowable(() ->
                volume.layers().createSnapshot("no-inodes", java.time.Instant.now()));
            assertThat(snapshot).as("a snapshot needs new files").isNotNull();
            assertThat(describe(snapshot)).contains("No space left on device");
            assertThat(volume.layers().snapshots()).as("nothing half made").isEmpty();
            final Throwable create = org.assertj.core.api.Assertions.catchThrowable(() ->
                server.volumes().create("another", 1L << 20, null, "", false));
            assertThat(create).as("a volume needs new files").isNotNull();
            assertThat(describe(create)).contains("No space left on device");
            assertThat(server.volumes().list()).extracting(m -> m.name()).containsExactly("ino");
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x33 0 64k", "-c", "flush", uri).assertSuccess();

            for (int i = 0; i < made; i++) {
                Files.delete(fillers.resolve("f" + i));
            }
            volume.layers().createSnapshot("after", java.time.Instant.now());
            ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x34 0 64k", "-c", "flush", uri).assertSuccess();
            try (var view = volume.layers().snapshotView("after")) {
                final java.nio.ByteBuffer b = java.nio.ByteBuffer.allocateDirect(64 << 10);
                view.read(b, 0);
                for (int i = 0; i < b.capacity(); i++) {
                    assertThat(b.get(i)).as("snapshot byte %d", i).isEqualTo((byte) 0x33);
                }
            }
            server.volumes().create("another", 1L << 20, null, "", false);
        } finally {
            ExternalTool.run("umount", mount.toString());
        }
    }

    /** The message of a failure and its causes, where ENOSPC may sit a level down. */
    private static String describe(final Throwable t) {
        final StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            b.append(c).append(" / ");
        }
        return b.toString();
    }
}
