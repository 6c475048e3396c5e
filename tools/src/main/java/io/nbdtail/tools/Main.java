package io.nbdtail.tools;

import io.nbdtail.volume.VolumeException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * {@code nbdtail}: the server ({@code serve}) and the offline tools on a data directory. Exit codes: 0 success,
 * 1 failure (the message says what was wrong and what to do), 2 bad usage.
 */
@Command(name = "nbdtail", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
    description = "Block-storage server for tails: serves volumes to qemu over NBD.",
    subcommands = {ServeCommand.class, VolumeCommand.class, CommandLine.HelpCommand.class})
public final class Main {
    public static final int EXIT_FAILED = 1;

    public static void main(final String[] args) {
        // The daemon logs at INFO; the offline commands speak through their output and log only problems.
        if ((args.length == 0 || !args[0].equals("serve")) && System.getenv("NBDTAIL_LOG_LEVEL") == null) {
            System.setProperty("nbdtail.log.level", "WARN");
        }
        System.exit(commandLine().execute(args));
    }

    /** The configured command line, also used by tests. */
    public static CommandLine commandLine() {
        final CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            final boolean expected = e instanceof VolumeException || e instanceof IllegalArgumentException;
            commandLine.getErr().println("nbdtail: " + e.getMessage());
            if (!expected || System.getenv("NBDTAIL_DEBUG") != null) {
                e.printStackTrace(commandLine.getErr());
            }
            return EXIT_FAILED;
        });
        return cl;
    }

    /** The version from the jar manifest, or {@code dev} when run from classes. */
    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            final String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"nbdtail " + (v != null ? v : "dev")};
        }
    }
}
