package io.nbdtail.tools.it;

import io.nbdtail.testing.ExternalTool;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A volume on a real block device: a loop device over a file, which needs root. Skipped, with the reason
 * printed, when not root or when loop devices are unavailable.
 */
class BlockDeviceIT {
    @TempDir
    Path dir;

    @Test
    void shouldServeALoopDeviceRegisteredByPath() throws Exception {
        final boolean root = "root".equals(System.getProperty("user.name"));
        if (!root) {
            System.out.println("BlockDeviceIT skipped: needs root to attach a loop device");
        }
        assumeTrue(root, "needs root to attach a loop device");
        final Path backing = dir.resolve("lv.img");
        try (RandomAccessFile f = new RandomAccessFile(backing.toFile(), "rw")) {
            f.setLength(64L << 20);
        }
        final ExternalTool.Result attach = ExternalTool.run("losetup", "-f", "--show", backing.toString());
        if (attach.exitCode() != 0) {
            System.out.println("BlockDeviceIT skipped: losetup failed: " + attach.stderr());
        }
        assumeTrue(attach.exitCode() == 0, "losetup failed: " + attach.stderr());
        final String device = attach.stdout().trim();
        try {
            final Path data = dir.resolve("data");
            ServerProcess.cli("volume", "create", "lv", "--device", device, "--data-dir", data.toString())
                .assertSuccess();
            final String info = ServerProcess.cli("volume", "info", "lv", "--data-dir", data.toString())
                .assertSuccess().stdout();
            assertThat(info).contains(device).contains(Long.toString(64L << 20));
            try (ServerProcess server = ServerProcess.start(data, dir.resolve("server.log"))) {
                assertThat(ExternalTool.run("nbdinfo", "--json", server.uri("lv")).assertSuccess().stdout())
                    .contains("\"export-size\": " + (64L << 20));
                ExternalTool.run("qemu-io", "-f", "raw", "-c", "write -P 0x42 1M 64k", "-c", "flush", "-c",
                    "read -P 0x42 1M 64k", "-c", "write -z 2M 64k", "-c", "read -P 0 2M 64k", server.uri("lv"))
                    .assertSuccess();
                assertThat(server.terminate(60)).isZero();
            }
            // The bytes reached the device, and so the file behind it.
            final byte[] bytes = Files.readAllBytes(backing);
            assertThat(bytes[(1 << 20) + 100]).isEqualTo((byte) 0x42);
        } finally {
            ExternalTool.run("losetup", "-d", device);
        }
    }
}
