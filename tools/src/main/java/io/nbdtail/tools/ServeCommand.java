package io.nbdtail.tools;

import io.nbdtail.server.Daemon;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/** {@code nbdtail serve}: serves every volume of the data directory until SIGTERM or SIGINT. */
@Command(name = "serve", mixinStandardHelpOptions = true,
    description = {"Serve every volume of the data directory as an NBD export of the same name.",
        "Under systemd socket activation (LISTEN_PID/LISTEN_FDS) it serves the inherited socket instead.",
        "SIGTERM or SIGINT: finish requests in flight, sync every volume, exit 0."})
final class ServeCommand implements Callable<Integer> {
    @Mixin
    private DataDirOption dataDir;

    @Option(names = "--listen", paramLabel = "ADDR:PORT",
        description = "Address to listen on (default 127.0.0.1:10809, or the configuration file's).")
    private String listen;

    @Option(names = "--api-listen", paramLabel = "ADDR:PORT|off",
        description = "Control API address (default 127.0.0.1:10810, or the configuration file's); off disables it.")
    private String apiListen;

    @Option(names = "--api-token-file", paramLabel = "FILE",
        description = "Bearer token of the control API (default DATA/api-token, created with mode 0600 if missing).")
    private Path apiTokenFile;

    @Option(names = "--config", paramLabel = "FILE", description = "JSON configuration file (see docs/operations.md).")
    private Path config;

    @Override
    public Integer call() {
        return Daemon.run(new Daemon.Options(dataDir.dataDir(), listen, apiListen, apiTokenFile, config));
    }
}
