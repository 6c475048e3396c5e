package io.nbdtail.tools;

import picocli.CommandLine.Option;

import java.nio.file.Path;

/** {@code --data-dir}, shared by every command that works on a data directory. */
final class DataDirOption {
    @Option(names = "--data-dir", paramLabel = "DIR",
        description = "Data directory (default: $NBDTAIL_DATA_DIR, else /var/lib/nbdtail).")
    private Path dataDir;

    Path dataDir() {
        if (dataDir != null) {
            return dataDir;
        }
        final String env = System.getenv("NBDTAIL_DATA_DIR");
        return Path.of(env != null && !env.isBlank() ? env : "/var/lib/nbdtail");
    }
}
