package io.nbdtail.tools;

import picocli.CommandLine.Option;

import java.nio.file.Path;

/** {@code --data-dir}, shared by every command that works on a data directory. */
final class DataDirOption {
    @Option(names = "--data-dir", paramLabel = "DIR",
        description = {"Data directory (default: $NBDTAIL_DATA_DIR, else /var/lib/nbdtail for serve).",
            "Volume commands work offline on it when given, and through the server's control API otherwise."})
    private Path dataDir;

    Path dataDir() {
        if (dataDir != null) {
            return dataDir;
        }
        final String env = System.getenv("NBDTAIL_DATA_DIR");
        return Path.of(env != null && !env.isBlank() ? env : "/var/lib/nbdtail");
    }

    /** Whether a data directory was given: {@code --data-dir}, or {@code $NBDTAIL_DATA_DIR} set. */
    boolean explicit() {
        final String env = System.getenv("NBDTAIL_DATA_DIR");
        return dataDir != null || env != null && !env.isBlank();
    }
}
